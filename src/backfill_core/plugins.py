"""Discovering plugins through the ``backfill`` entry-point group, one at a time.

A plugin that fails to import, to register or to pass pluggy's checks is reported on one
line and left out; every other plugin still loads.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal, TextIO

import pluggy

from backfill_core import hookspecs
from backfill_core.errors import BackfillError, PluginUnavailable, UsageError
from backfill_core.extractor import Extractor
from backfill_core.throttle import Throttle
from backfill_core.validator import Validator

ENTRY_POINT_GROUP = "backfill"
BUILTIN_DISTRIBUTION = "backfill"
LOAD_PLUGINS_ENV = "BACKFILL_LOAD_PLUGINS"
DISABLE_PLUGINS_ENV = "BACKFILL_DISABLE_PLUGINS"
DISABLE_PLUGIN_OPTION = "--disable-plugin"


def normalize(dist_name: str) -> str:
    """PEP 503 normalisation, so ``Backfill_Foo`` and ``backfill-foo`` name one distribution."""
    return re.sub(r"[-_.]+", "-", dist_name).lower()


def name_list(value: str) -> list[str]:
    """The names of a comma-separated list, blanks around them and empty items dropped."""
    return [n.strip() for n in value.split(",") if n.strip()]


@dataclass
class PluginInfo:
    """One plugin as ``backfill list-plugins`` shows it."""

    name: str
    distribution: str
    version: str
    entry_point: str
    status: Literal["ok", "error", "disabled"] = "ok"
    error: str | None = None
    extractors: list[str] = field(default_factory=list)
    validators: list[str] = field(default_factory=list)
    throttles: list[str] = field(default_factory=list)
    commands: bool = False
    conflicts: list[str] = field(default_factory=list)
    """Names this plugin registers that another plugin registers too; both are disabled."""
    problems: list[str] = field(default_factory=list)
    """What keeps part of it from running: an extractor that depends on an unknown extractor."""

    @property
    def key(self) -> str:
        """The name it is registered under with pluggy: unique per distribution."""
        return f"{self.distribution}:{self.name}"

    @property
    def label(self) -> str:
        return f"plugin {self.name!r} ({self.distribution} {self.version}, entry point {self.entry_point})"

    def named_by(self, selectors: Collection[str]) -> bool:
        """Whether one of ``selectors`` (PEP 503 normalised) is its entry-point or distribution name."""
        return normalize(self.name) in selectors or normalize(self.distribution) in selectors

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "status": self.status,
            "error": self.error,
            "extractors": self.extractors,
            "validators": self.validators,
            "throttles": self.throttles,
            "commands": self.commands,
            "conflicts": self.conflicts,
            "problems": self.problems,
        }


class Registry:
    """The loaded plugins and what they provide."""

    def __init__(self, warn: TextIO | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.extractors: dict[str, Extractor] = {}
        self.validators: dict[str, Validator] = {}
        self.owner: dict[tuple[str, str], PluginInfo] = {}
        self.conflicts: dict[tuple[str, str], list[PluginInfo]] = {}
        self._provided: dict[str, tuple[list[Extractor], list[Validator]]] = {}
        """What each loaded plugin registered, by PluginInfo.key: for rebuilding after disable."""
        self._throttles: dict[str, list[Throttle]] = {}
        """The throttles each loaded plugin registered, by PluginInfo.key, in loading order."""
        self._excluded_by: dict[str, str] = {}
        """PluginInfo.key -> the setting that left the plugin out (an env var or --disable-plugin)."""
        self._warn = warn

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def discover(cls, warn: TextIO | None = sys.stderr, disable: Collection[str] = ()) -> Registry:
        """Load every installed plugin that ``BACKFILL_LOAD_PLUGINS`` allows, except those named by
        ``BACKFILL_DISABLE_PLUGINS`` or ``disable`` (``--disable-plugin``). Left-out plugins are
        not imported. A name in ``BACKFILL_DISABLE_PLUGINS`` that is no plugin's gets a warning.
        """
        registry = cls(warn)
        allowed = os.environ.get(LOAD_PLUGINS_ENV)
        wanted = None if allowed is None else {normalize(n) for n in name_list(allowed)}
        from_env = name_list(os.environ.get(DISABLE_PLUGINS_ENV, ""))
        off = [
            (DISABLE_PLUGIN_OPTION, {normalize(n) for n in disable}),
            (DISABLE_PLUGINS_ENV, {normalize(n) for n in from_env}),
        ]
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=_builtin_first):
            dist = normalize(ep.dist.name) if ep.dist else "unknown"
            info = _info(ep)
            source = next((source for source, names in off if info.named_by(names)), None)
            if source is None and wanted is not None and dist != BUILTIN_DISTRIBUTION and dist not in wanted:
                source = LOAD_PLUGINS_ENV
            if source is None:
                registry.load_entry_point(ep)
            else:
                registry._leave_out(info, source)
                registry.plugins.append(info)
        unmatched = registry.unmatched(from_env)
        if unmatched:
            registry._say(
                f"backfill: {DISABLE_PLUGINS_ENV} names no installed plugin: "
                f"{', '.join(map(repr, unmatched))} (installed: {registry.installed()})"
            )
        return registry

    def unmatched(self, selectors: Iterable[str]) -> list[str]:
        """The names among ``selectors`` that are no plugin's entry-point or distribution name."""
        return [s for s in selectors if not any(p.named_by({normalize(s)}) for p in self.plugins)]

    def installed(self) -> str:
        """The plugins' names, for messages."""
        return ", ".join(dict.fromkeys(p.name for p in self.plugins)) or "none"

    def disable(self, selectors: Iterable[str], source: str = DISABLE_PLUGIN_OPTION) -> list[str]:
        """Leave out the plugins that ``selectors`` name (entry-point or distribution names, PEP 503
        normalised), as ``source`` asks; return the selectors that name no plugin.

        A loaded plugin is unregistered and its extractors and validators are forgotten (a name it
        shared with another plugin goes back to that plugin); commands it already added stay.
        """
        wanted = list(selectors)
        names = {normalize(s) for s in wanted}
        chosen = [p for p in self.plugins if p.named_by(names) and p.key not in self._excluded_by]
        for info in chosen:
            if self.pm.has_plugin(info.key):
                self.pm.unregister(name=info.key)
            self._provided.pop(info.key, None)
            self._throttles.pop(info.key, None)
            info.throttles = []
            info.commands = False
            self._leave_out(info, source)
        if chosen:
            self._rebuild()
        return self.unmatched(wanted)

    def _leave_out(self, info: PluginInfo, source: str) -> None:
        info.status = "disabled"
        info.error = {LOAD_PLUGINS_ENV: "not in", DISABLE_PLUGIN_OPTION: "named by"}.get(source, "named in")
        info.error += f" {source}"
        self._excluded_by[info.key] = source

    def _rebuild(self) -> None:
        """Claim every name again from the plugins still loaded (quietly: conflicts were reported)."""
        self.extractors.clear()
        self.validators.clear()
        self.owner.clear()
        self.conflicts.clear()
        warn, self._warn = self._warn, None
        try:
            for info in self.plugins:
                info.extractors, info.validators, info.conflicts = [], [], []
                extractors, validators = self._provided.get(info.key, ([], []))
                for x in extractors:
                    self._claim("extractor", x, info, self.extractors)
                for v in validators:
                    self._claim("validator", v, info, self.validators)
        finally:
            self._warn = warn
        self._find_problems()

    def load_entry_point(self, ep: EntryPoint) -> PluginInfo:
        info = _info(ep)
        try:
            module = ep.load()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            return self._failed(info, exc)
        return self.add(module, info)

    def add(self, plugin: object, info: PluginInfo | None = None) -> PluginInfo:
        """Register a plugin object (a module or an instance with hookimpls)."""
        if info is None:
            name = getattr(plugin, "__name__", type(plugin).__name__)
            info = PluginInfo(name=name, distribution=name, version="-", entry_point="(direct)")
        try:
            self.pm.register(plugin, name=info.key)
            self.pm.check_pending()
        except Exception as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            return self._failed(info, exc)
        try:
            extractors = self._collect(info, "register_extractors", Extractor, plugin)
            validators = self._collect(info, "register_validators", Validator, plugin)
            throttles = self._collect(info, "register_throttles", Throttle, plugin)
        except Exception as exc:
            self.pm.unregister(plugin)
            return self._failed(info, exc)
        info.commands = bool(_impls(self.pm, "register_commands", plugin))
        self.plugins.append(info)
        self._provided[info.key] = (extractors, validators)
        self._throttles[info.key] = throttles
        info.throttles = [t.name for t in throttles]
        for kind, items, table in (
            ("extractor", extractors, self.extractors),
            ("validator", validators, self.validators),
        ):
            for item in items:
                self._claim(kind, item, info, table)
        self._find_problems()
        return info

    def _find_problems(self) -> None:
        """Note, in each plugin's row, every extractor of it that depends on an unknown one.

        Run after each plugin loads: a dependency may come from a plugin that loads later.
        """
        for info in self.plugins:
            info.problems = [
                f"extractor {name!r} depends on {self._dependency(dep)}"
                for name in info.extractors
                if self.owner.get(("extractor", name)) is info
                for dep in self.extractors[name].depends_on
                if dep not in self.extractors
            ]

    def _dependency(self, dep: str) -> str:
        if ("extractor", dep) in self.conflicts:
            return f"extractor {dep!r}, which two plugins register (so it is disabled)"
        return f"unknown extractor {dep!r}"

    def _collect(self, info: PluginInfo, hook: str, kind: type, plugin: object) -> list[Any]:
        found: list[Any] = []

        def register(item: object) -> None:
            if not isinstance(item, kind):
                raise TypeError(f"{hook} registered {item!r}, which is not a {kind.__name__} instance")
            problems = item.declaration_problems() if isinstance(item, Extractor) else []
            if not isinstance(getattr(item, "name", None), str) or (
                isinstance(item, Throttle) and not item.name
            ):
                problems.append("it has no name")
            if problems:
                raise TypeError(f"{hook} registered {item!r}: " + "; ".join(problems))
            found.append(item)

        for impl in _impls(self.pm, hook, plugin):
            impl.function(register=register)
        return found

    def _claim(self, kind: str, item: Extractor | Validator, info: PluginInfo, table: dict[str, Any]) -> None:
        getattr(info, kind + "s").append(item.name)
        slot = (kind, item.name)
        if slot in self.conflicts:
            self.conflicts[slot].append(info)
        elif slot in self.owner:
            self.conflicts[slot] = [self.owner.pop(slot), info]
            del table[item.name]
        else:
            self.owner[slot] = info
            table[item.name] = item
            return
        for owner in self.conflicts[slot]:
            if f"{kind}:{item.name}" not in owner.conflicts:
                owner.conflicts.append(f"{kind}:{item.name}")
        owners = " and ".join(p.label for p in self.conflicts[slot])
        self._say(
            f"backfill: {kind} {item.name!r} is registered by both {owners}; "
            f"it is disabled until one of them is uninstalled or renames it"
        )

    def _failed(self, info: PluginInfo, exc: BaseException) -> PluginInfo:
        info.status = "error"
        info.error = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        self.plugins.append(info)
        self._say(f"backfill: {info.label} failed to load: {info.error}")
        return info

    def _say(self, line: str) -> None:
        if self._warn is not None:
            print(line, file=self._warn)

    # -- lookup --------------------------------------------------------------------------------

    def extractor(self, name: str) -> Extractor:
        return self._lookup("extractor", name, self.extractors)  # type: ignore[return-value]

    def validator(self, name: str) -> Validator:
        return self._lookup("validator", name, self.validators)  # type: ignore[return-value]

    def plugin_of(self, kind: str, name: str) -> PluginInfo | None:
        """The plugin that registered extractor or validator ``name`` (``kind``), if one did."""
        return self.owner.get((kind, name))

    def _lookup(self, kind: str, name: str, table: dict[str, Any]) -> object:
        if name in table:
            return table[name]
        raise self._unavailable(kind, name, table)

    def _unavailable(self, kind: str, name: str, table: dict[str, Any], needed_by: str = "") -> BackfillError:
        """Why ``name`` cannot be had: registered twice, maybe from a broken plugin, or unknown.

        ``needed_by`` (``extractor 'x' (plugin P) depends on``) starts the message.
        """
        lead = f"{needed_by} " if needed_by else ""
        if (kind, name) in self.conflicts:
            owners = " and ".join(p.label for p in self.conflicts[(kind, name)])
            return PluginUnavailable(
                f"{lead}{kind} {name!r}{', which' if needed_by else ''} is registered by both {owners}; "
                f"uninstall one of them or set {LOAD_PLUGINS_ENV} to load only one"
            )
        broken = [p for p in self.plugins if p.status == "error"]
        if broken:
            labels = "; ".join(f"{p.label}: {p.error}" for p in broken)
            return PluginUnavailable(
                f"{lead}unknown {kind} {name!r}; it may come from a plugin that failed to load ({labels}). "
                f"Fix or reinstall that plugin, then run `backfill list-plugins`"
            )
        known = ", ".join(sorted(table)) or "none"
        left_out: dict[str, list[str]] = {}
        for p in self.plugins:
            source = self._excluded_by.get(p.key)
            if source == LOAD_PLUGINS_ENV:
                left_out.setdefault(source, []).append(p.distribution)
            elif source is not None:
                left_out.setdefault(source, []).append(f"{p.name} ({p.distribution})")
        hint = "".join(f"; {source} left out {', '.join(names)}" for source, names in left_out.items())
        return UsageError(
            f"{lead}unknown {kind} {name!r} (available: {known}{hint}); see `backfill list-plugins`"
        )

    def ordered(self, names: Iterable[str]) -> list[Extractor]:
        """The named extractors in dependency order (dependencies first, then as named)."""
        chosen = {name: self.extractor(name) for name in names}
        order: list[Extractor] = []
        state: dict[str, str] = {}

        def visit(name: str, path: tuple[str, ...]) -> None:
            if state.get(name) == "done":
                return
            if state.get(name) == "visiting":
                raise UsageError(f"extractors depend on each other in a cycle: {' -> '.join(path)}")
            state[name] = "visiting"
            for dep in chosen[name].depends_on:
                if dep not in self.extractors:
                    raise self._missing_dependency(name, dep)
                if dep in chosen:
                    visit(dep, (*path, dep))
            state[name] = "done"
            order.append(chosen[name])

        for name in chosen:
            visit(name, (name,))
        return order

    def _missing_dependency(self, name: str, dep: str) -> BackfillError:
        """The error for extractor ``name``, whose ``depends_on`` names ``dep``, which is not loaded."""
        owner = self.plugin_of("extractor", name)
        plugin = owner.name if owner else "?"
        error = self._unavailable(
            "extractor", dep, self.extractors, f"extractor {name!r} (plugin {plugin}) depends on"
        )
        if isinstance(error, UsageError):
            error = UsageError(
                f"{error}. Install or enable the plugin that provides {dep!r}, ask the authors of plugin "
                f"{plugin} to fix its depends_on, or leave that plugin out ({DISABLE_PLUGINS_ENV}={plugin})"
            )
        return error

    def throttles(self) -> list[tuple[str, Throttle]]:
        """The loaded plugins' throttles, each with its plugin's name, in loading order."""
        by_key = {p.key: p.name for p in self.plugins}
        return [(by_key[key], t) for key, found in self._throttles.items() for t in found]

    def validators_for(self, extractor_names: Iterable[str]) -> list[Validator]:
        ran = set(extractor_names)
        return [v for v in self.validators.values() if ran & set(v.covers)]

    def add_commands(self, cli: Any) -> None:
        """Let plugins add subcommands; one may not replace a command that is already there."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            info = next((p for p in self.plugins if p.key == impl.plugin_name), None)
            label = info.label if info else impl.plugin_name
            before = dict(cli.commands)
            try:
                impl.function(cli=cli)
            except Exception as exc:
                self._say(f"backfill: {label} could not add its commands: {type(exc).__name__}: {exc}")
            for name, command in before.items():
                if cli.commands.get(name) is not command:
                    cli.commands[name] = command
                    self._say(f"backfill: {label} tried to replace the {name!r} command; kept the original")


def _info(ep: EntryPoint, **extra: Any) -> PluginInfo:
    return PluginInfo(
        name=ep.name,
        distribution=ep.dist.name if ep.dist else "unknown",
        version=ep.dist.version if ep.dist else "?",
        entry_point=f"{ep.name} = {ep.value}",
        **extra,
    )


def _impls(pm: pluggy.PluginManager, hook: str, plugin: object) -> list[pluggy.HookImpl]:
    return [impl for impl in getattr(pm.hook, hook).get_hookimpls() if impl.plugin is plugin]


def _builtin_first(ep: EntryPoint) -> tuple[bool, str]:
    dist = normalize(ep.dist.name) if ep.dist else ""
    return (dist != BUILTIN_DISTRIBUTION, f"{dist}:{ep.name}")


def make_registry(*plugins: object) -> Registry:
    """A registry holding only ``plugins``; for tests and embedding."""
    registry = Registry()
    for plugin in plugins:
        registry.add(plugin)
    return registry
