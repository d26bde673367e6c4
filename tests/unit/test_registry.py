"""The plugin registry: loading, conflicts, failures, lookup and dependency order."""

from __future__ import annotations

import io
import itertools
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill_core import (
    ExitCode,
    Extractor,
    Metric,
    PluginUnavailable,
    Registry,
    UsageError,
    Validator,
    hookimpl,
    make_registry,
)
from backfill_core.changes import Change
from backfill_core.extractor import Row

Register = Callable[[Any], None]


def extractor(name: str, depends_on: tuple[str, ...] = (), **attrs: Any) -> Extractor:
    """An extractor instance of a fresh class with the given declarations."""

    def extract(self: Extractor, row: Row) -> list[Change]:
        return []

    namespace: dict[str, Any] = {
        "name": name,
        "source": "sources",
        "columns": ("id",),
        "writes": {"targets": ("id",)},
        "depends_on": depends_on,
        "extract": extract,
        **attrs,
    }
    cls = type(f"X_{name}", (Extractor,), namespace)
    return cls()  # type: ignore[no-any-return]


class CountValidator(Validator):
    name = "counts"

    def metrics(self) -> list[Metric]:
        return []


def plugin(cls_name: str, *items: Any, raise_after: Exception | None = None) -> object:
    """A plugin object whose class is called ``cls_name`` and registers ``items``."""

    def register_extractors(self: object, register: Register) -> None:
        for x in items:
            if isinstance(x, Extractor) or not isinstance(x, Validator):
                register(x)
        if raise_after is not None:
            raise raise_after

    def register_validators(self: object, register: Register) -> None:
        for v in items:
            if isinstance(v, Validator):
                register(v)

    namespace = {
        "register_extractors": hookimpl(register_extractors),
        "register_validators": hookimpl(register_validators),
    }
    return type(cls_name, (), namespace)()


def registry_with(*plugins: object) -> tuple[Registry, io.StringIO]:
    warn = io.StringIO()
    registry = Registry(warn=warn)
    for p in plugins:
        registry.add(p)
    return registry, warn


def status(registry: Registry) -> dict[str, str]:
    return {p.name: p.status for p in registry.plugins}


# -- loading ------------------------------------------------------------------------------------


def test_extractors_and_validators_are_registered() -> None:
    alpha, validator = extractor("alpha"), CountValidator()
    registry, warn = registry_with(plugin("GoodPlugin", alpha, validator))
    assert registry.extractor("alpha") is alpha
    assert registry.validator("counts") is validator
    assert status(registry) == {"GoodPlugin": "ok"}
    (info,) = registry.plugins
    assert info.extractors == ["alpha"] and info.validators == ["counts"]
    assert warn.getvalue() == ""


def test_make_registry_adds_every_plugin() -> None:
    registry = make_registry(plugin("P1", extractor("alpha")), plugin("P2", extractor("beta")))
    assert sorted(registry.extractors) == ["alpha", "beta"]


def test_same_name_from_two_plugins_is_unavailable_naming_both() -> None:
    registry, warn = registry_with(
        plugin("FirstPlugin", extractor("shared"), extractor("alpha")),
        plugin("SecondPlugin", extractor("shared"), extractor("beta")),
    )
    assert "shared" not in registry.extractors
    with pytest.raises(PluginUnavailable) as info:
        registry.extractor("shared")
    assert info.value.exit_code == ExitCode.ENVIRONMENT and int(info.value.exit_code) == 3
    assert "FirstPlugin" in str(info.value) and "SecondPlugin" in str(info.value)
    assert registry.extractor("alpha").name == "alpha"
    assert registry.extractor("beta").name == "beta"
    lines = warn.getvalue().splitlines()
    assert len(lines) == 1
    assert "'shared'" in lines[0] and "FirstPlugin" in lines[0] and "SecondPlugin" in lines[0]


def test_third_claimant_keeps_the_name_unavailable() -> None:
    registry, warn = registry_with(
        plugin("P1", extractor("shared")),
        plugin("P2", extractor("shared")),
        plugin("P3", extractor("shared")),
    )
    with pytest.raises(PluginUnavailable) as info:
        registry.extractor("shared")
    for name in ("P1", "P2", "P3"):
        assert name in str(info.value)
    assert len(warn.getvalue().splitlines()) == 2


def test_misspelled_hook_is_an_error_and_other_plugins_still_load() -> None:
    class Misspelled:
        @hookimpl
        def register_extractor(self, register: Register) -> None:
            register(extractor("never"))

    registry, warn = registry_with(Misspelled(), plugin("GoodPlugin", extractor("alpha")))
    assert status(registry) == {"Misspelled": "error", "GoodPlugin": "ok"}
    bad = registry.plugins[0]
    assert bad.error is not None and "register_extractor" in bad.error
    assert registry.extractor("alpha").name == "alpha"
    assert "never" not in registry.extractors
    lines = warn.getvalue().splitlines()
    assert len(lines) == 1 and "Misspelled" in lines[0] and "failed to load" in lines[0]


def test_plugin_whose_hook_raises_is_an_error_and_provides_nothing() -> None:
    failing = plugin("Failing", extractor("half"), raise_after=RuntimeError("database of plugins\nis gone"))
    registry, warn = registry_with(failing, plugin("GoodPlugin", extractor("alpha")))
    assert status(registry) == {"Failing": "error", "GoodPlugin": "ok"}
    assert registry.plugins[0].error == "RuntimeError: database of plugins is gone"
    assert "half" not in registry.extractors
    lines = warn.getvalue().splitlines()
    assert len(lines) == 1
    assert "Failing" in lines[0] and "RuntimeError: database of plugins is gone" in lines[0]
    with pytest.raises(PluginUnavailable) as info:
        registry.extractor("half")
    assert info.value.exit_code == 3
    assert "'half'" in str(info.value) and "Failing" in str(info.value)
    assert registry.extractor("alpha").name == "alpha"


def test_unknown_name_without_failed_plugins_is_a_usage_error() -> None:
    registry, _ = registry_with(plugin("GoodPlugin", extractor("alpha"), extractor("beta")))
    with pytest.raises(UsageError) as info:
        registry.extractor("gamma")
    assert not isinstance(info.value, PluginUnavailable)
    assert info.value.exit_code == ExitCode.USAGE and int(info.value.exit_code) == 2
    assert "'gamma'" in str(info.value) and "alpha, beta" in str(info.value)
    with pytest.raises(UsageError):
        registry.validator("nothing")


def test_unknown_name_with_a_failed_plugin_is_plugin_unavailable() -> None:
    registry, _ = registry_with(
        plugin("Broken", raise_after=ImportError("no module named x")),
        plugin("GoodPlugin", extractor("alpha")),
    )
    with pytest.raises(PluginUnavailable) as info:
        registry.extractor("gamma")
    assert info.value.exit_code == 3
    assert "Broken" in str(info.value) and "no module named x" in str(info.value)


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        (object(), "not a Extractor instance"),
        ("alpha", "not a Extractor instance"),
        (extractor("Bad-Name"), "lower_snake_case"),
        (extractor("no_tables", writes={}), "writes declares no table"),
        (extractor("string_columns", columns="id"), "not a string"),
        (extractor("bad_source", source=42), "table name"),
    ],
)
def test_registering_a_bad_extractor_is_an_error(item: object, fragment: str) -> None:
    registry, warn = registry_with(plugin("BadItem", item), plugin("GoodPlugin", extractor("alpha")))
    assert status(registry) == {"BadItem": "error", "GoodPlugin": "ok"}
    error = registry.plugins[0].error
    assert error is not None and fragment in error
    assert list(registry.extractors) == ["alpha"]
    assert len(warn.getvalue().splitlines()) == 1


def test_extractor_missing_a_declaration_is_an_error() -> None:
    class NoWrites(Extractor):
        name = "no_writes"
        source = "sources"
        columns = ("id",)

        def extract(self, row: Row) -> list[Change]:
            return []

    registry, _ = registry_with(plugin("BadItem", NoWrites()))
    assert status(registry) == {"BadItem": "error"}
    error = registry.plugins[0].error
    assert error is not None and "'writes'" in error


def test_registering_a_validator_as_extractor_is_an_error() -> None:
    class Mixup:
        @hookimpl
        def register_extractors(self, register: Register) -> None:
            register(CountValidator())

    registry, _ = registry_with(Mixup())
    assert status(registry) == {"Mixup": "error"}
    error = registry.plugins[0].error
    assert error is not None and "not a Extractor instance" in error
    assert registry.extractors == {} and registry.validators == {}


def test_registering_a_non_validator_as_validator_is_an_error() -> None:
    class BadValidators:
        @hookimpl
        def register_validators(self, register: Register) -> None:
            register(extractor("alpha"))

    registry, _ = registry_with(BadValidators())
    assert status(registry) == {"BadValidators": "error"}
    assert registry.validators == {}


def test_one_warning_line_per_problem() -> None:
    class Misspelled:
        @hookimpl
        def register_validator(self, register: Register) -> None:
            pass

    _, warn = registry_with(
        plugin("P1", extractor("shared")),
        plugin("P2", extractor("shared")),
        plugin("Failing", raise_after=ValueError("multi\nline\nmessage")),
        Misspelled(),
        plugin("BadItem", object()),
        plugin("Fine", extractor("fine")),
    )
    lines = warn.getvalue().splitlines()
    assert len(lines) == 4
    assert all(line.startswith("backfill: ") for line in lines)
    assert "multi line message" in lines[1]


def test_registry_without_warn_stream_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    registry = make_registry(plugin("Failing", raise_after=ValueError("boom")))
    assert status(registry) == {"Failing": "error"}
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# -- dependency order ---------------------------------------------------------------------------


def chain_registry() -> Registry:
    return make_registry(
        plugin(
            "Chain",
            extractor("gamma", depends_on=("beta",)),
            extractor("alpha"),
            extractor("beta", depends_on=("alpha",)),
            extractor("delta", depends_on=("alpha",)),
        )
    )


@pytest.mark.parametrize("names", list(itertools.permutations(["alpha", "beta", "gamma"])))
def test_ordered_puts_dependencies_first_whatever_the_order_given(names: tuple[str, ...]) -> None:
    order = [x.name for x in chain_registry().ordered(names)]
    assert order == ["alpha", "beta", "gamma"]


def test_ordered_keeps_the_given_order_for_independent_names() -> None:
    registry = chain_registry()
    assert [x.name for x in registry.ordered(["delta", "beta"])] == ["delta", "beta"]
    assert [x.name for x in registry.ordered(["beta", "delta", "alpha"])] == ["alpha", "beta", "delta"]


def test_ordered_does_not_add_dependencies_that_were_not_named() -> None:
    assert [x.name for x in chain_registry().ordered(["gamma"])] == ["gamma"]


def test_ordered_rejects_a_dependency_cycle() -> None:
    registry = make_registry(
        plugin(
            "Cycle",
            extractor("one", depends_on=("three",)),
            extractor("two", depends_on=("one",)),
            extractor("three", depends_on=("two",)),
        )
    )
    with pytest.raises(UsageError) as info:
        registry.ordered(["two", "one", "three"])
    assert "cycle" in str(info.value)
    assert info.value.exit_code == 2


def test_ordered_rejects_a_self_dependency() -> None:
    registry = make_registry(plugin("Selfish", extractor("me", depends_on=("me",))))
    with pytest.raises(UsageError):
        registry.ordered(["me"])


def test_ordered_rejects_an_unknown_dependency() -> None:
    registry = make_registry(plugin("P", extractor("orphan", depends_on=("ghost",))))
    with pytest.raises(UsageError) as info:
        registry.ordered(["orphan"])
    assert "'ghost'" in str(info.value)


def test_ordered_rejects_an_unknown_name() -> None:
    with pytest.raises(UsageError):
        chain_registry().ordered(["alpha", "nope"])


def test_validators_for_returns_validators_covering_the_extractors() -> None:
    class Covering(Validator):
        name = "covering"
        covers = ("beta",)

        def metrics(self) -> list[Metric]:
            return []

    registry = make_registry(plugin("P", extractor("alpha"), extractor("beta"), Covering()))
    assert [v.name for v in registry.validators_for(["alpha", "beta"])] == ["covering"]
    assert registry.validators_for(["alpha"]) == []


# -- real entry-point discovery ------------------------------------------------------------------


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Install, on sys.path, a distribution with a ``backfill`` entry point to a new module."""
    modules: list[str] = []

    def make(dist: str, module_source: str) -> str:
        module = f"fake_backfill_plugin_{len(modules)}_{abs(hash(tmp_path)) % 10**8}"
        modules.append(module)
        (tmp_path / f"{module}.py").write_text(module_source)
        info = tmp_path / f"{re.sub(r'[-_.]+', '_', dist)}-1.2.3.dist-info"  # as installers name it
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[backfill]\nfakeplug = {module}\n")
        return module

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for module in modules:
        sys.modules.pop(module, None)


GOOD_MODULE = """
from backfill_core import Extractor, hookimpl

class FakeExtractor(Extractor):
    name = "unit_fake_one"
    source = "sources"
    columns = ("id",)
    writes = {"targets": ("id",)}

    def extract(self, row):
        return []

@hookimpl
def register_extractors(register):
    register(FakeExtractor())
"""


def check_builtin(registry: Registry) -> None:
    builtin = next(p for p in registry.plugins if p.name == "testmanagement")
    assert builtin.status == "ok"
    assert builtin.distribution == "backfill"
    assert builtin.entry_point == "testmanagement = backfill_plugins.testmanagement.plugin"
    assert builtin.extractors == ["test_features", "bug_attribution"]
    assert builtin.validators == ["coverage"]
    assert builtin.commands
    assert [x.name for x in registry.ordered(["bug_attribution", "test_features"])] == [
        "test_features",
        "bug_attribution",
    ]


def test_discover_with_empty_allow_list_loads_the_builtin_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILL_LOAD_PLUGINS", "")
    warn = io.StringIO()
    registry = Registry.discover(warn=warn)
    check_builtin(registry)
    assert [p.name for p in registry.plugins] == ["testmanagement", "throttles"]  # third-party ones skipped
    assert warn.getvalue() == ""


def test_discover_filters_third_party_distributions(
    monkeypatch: pytest.MonkeyPatch, fake_distribution: Callable[..., str]
) -> None:
    fake_distribution("backfill_unit_fake", GOOD_MODULE)

    monkeypatch.setenv("BACKFILL_LOAD_PLUGINS", "")
    registry = Registry.discover(warn=io.StringIO())
    check_builtin(registry)
    assert "unit_fake_one" not in registry.extractors

    monkeypatch.setenv("BACKFILL_LOAD_PLUGINS", "Backfill.Unit-Fake, other")
    registry = Registry.discover(warn=io.StringIO())
    check_builtin(registry)
    assert "unit_fake_one" in registry.extractors
    fake = next(p for p in registry.plugins if p.name == "fakeplug")
    assert (fake.distribution, fake.version, fake.status) == ("backfill_unit_fake", "1.2.3", "ok")

    monkeypatch.delenv("BACKFILL_LOAD_PLUGINS")
    assert "unit_fake_one" in Registry.discover(warn=io.StringIO()).extractors


def test_discover_reports_a_plugin_that_fails_to_import(
    monkeypatch: pytest.MonkeyPatch, fake_distribution: Callable[..., str]
) -> None:
    fake_distribution("backfill-unit-broken", "raise ImportError('missing dependency foo')\n")
    monkeypatch.setenv("BACKFILL_LOAD_PLUGINS", "backfill-unit-broken")
    warn = io.StringIO()
    registry = Registry.discover(warn=warn)
    check_builtin(registry)
    broken = next(p for p in registry.plugins if p.distribution == "backfill-unit-broken")
    assert broken.status == "error"
    assert broken.error == "ImportError: missing dependency foo"
    lines = warn.getvalue().splitlines()
    assert len(lines) == 1 and "backfill-unit-broken" in lines[0] and "missing dependency foo" in lines[0]
    with pytest.raises(PluginUnavailable):
        registry.extractor("unit_fake_one")


# -- leaving plugins out: BACKFILL_DISABLE_PLUGINS, --disable-plugin -----------------------------


def test_disable_forgets_a_loaded_plugin_and_gives_a_shared_name_back() -> None:
    registry, warn = registry_with(
        plugin("FirstPlugin", extractor("shared"), extractor("alpha")),
        plugin("SecondPlugin", extractor("shared"), extractor("beta")),
    )
    assert "shared" not in registry.extractors

    unknown = registry.disable(["secondplugin", "no-such-plugin"], "--disable-plugin")

    assert unknown == ["no-such-plugin"]
    assert status(registry) == {"FirstPlugin": "ok", "SecondPlugin": "disabled"}
    first, second = registry.plugins
    assert second.error == "named by --disable-plugin"
    assert (second.extractors, second.conflicts, second.commands) == ([], [], False)
    assert (first.extractors, first.conflicts) == (["shared", "alpha"], [])
    assert sorted(registry.extractors) == ["alpha", "shared"]
    assert registry.plugin_of("extractor", "shared") is first
    assert not registry.pm.has_plugin(second.key)
    with pytest.raises(UsageError) as info:
        registry.extractor("beta")
    assert str(info.value) == (
        "unknown extractor 'beta' (available: alpha, shared; --disable-plugin left out "
        "SecondPlugin (SecondPlugin)); see `backfill list-plugins`"
    )
    assert len(warn.getvalue().splitlines()) == 1  # the conflict, reported when it arose; nothing since


def test_disable_leaves_a_broken_plugin_out_of_the_unknown_name_errors() -> None:
    registry, _ = registry_with(plugin("Broken", raise_after=ImportError("no module named x")))

    assert registry.disable(["Broken"], "BACKFILL_DISABLE_PLUGINS") == []

    assert (registry.plugins[0].status, registry.plugins[0].error) == (
        "disabled",
        "named in BACKFILL_DISABLE_PLUGINS",
    )
    with pytest.raises(UsageError) as info:  # no longer "it may come from a plugin that failed"
        registry.extractor("gamma")
    assert not isinstance(info.value, PluginUnavailable)


# -- an extractor that depends on an unknown one ------------------------------------------------


def test_an_unknown_dependency_is_a_problem_of_its_plugin_until_another_provides_it() -> None:
    registry, _ = registry_with(
        plugin("Orphans", extractor("orphan", depends_on=("ghost",)), extractor("fine"))
    )
    (orphans,) = registry.plugins
    assert orphans.status == "ok"
    assert orphans.problems == ["extractor 'orphan' depends on unknown extractor 'ghost'"]
    assert orphans.to_dict()["problems"] == orphans.problems

    registry.add(plugin("Ghosts", extractor("ghost")))

    assert orphans.problems == []


def test_a_dependency_registered_twice_is_a_problem_too() -> None:
    registry, _ = registry_with(
        plugin("Needy", extractor("needy", depends_on=("shared",))),
        plugin("P1", extractor("shared")),
        plugin("P2", extractor("shared")),
    )

    assert registry.plugins[0].problems == [
        "extractor 'needy' depends on extractor 'shared', which two plugins register (so it is disabled)"
    ]
    with pytest.raises(PluginUnavailable) as info:
        registry.ordered(["needy"])
    assert str(info.value).startswith(
        "extractor 'needy' (plugin Needy) depends on extractor 'shared', which is registered by both "
    )


def test_running_an_extractor_with_an_unknown_dependency_names_it_its_plugin_and_what_to_do() -> None:
    registry, _ = registry_with(
        plugin("Orphans", extractor("orphan", depends_on=("ghost",)), extractor("fine"))
    )

    with pytest.raises(UsageError) as info:
        registry.ordered(["fine", "orphan"])

    assert info.value.exit_code == 2
    assert str(info.value) == (
        "extractor 'orphan' (plugin Orphans) depends on unknown extractor 'ghost' (available: fine, orphan); "
        "see `backfill list-plugins`. Install or enable the plugin that provides 'ghost', ask the authors "
        "of plugin Orphans to fix its depends_on, or leave that plugin out (BACKFILL_DISABLE_PLUGINS=Orphans)"
    )


def test_an_unknown_dependency_with_a_broken_plugin_says_it_may_come_from_it() -> None:
    registry, _ = registry_with(
        plugin("Orphans", extractor("orphan", depends_on=("ghost",))),
        plugin("Broken", raise_after=ImportError("no module named x")),
    )

    with pytest.raises(PluginUnavailable) as info:
        registry.ordered(["orphan"])

    assert str(info.value).startswith(
        "extractor 'orphan' (plugin Orphans) depends on unknown extractor 'ghost'; it may come from a "
        "plugin that failed to load (plugin 'Broken'"
    )


# -- leaving plugins out at discovery -------------------------------------------------------------


@pytest.mark.parametrize("selector", ["fakeplug", "Backfill.Unit-Fake", "other, backfill_unit_fake"])
def test_discover_leaves_out_what_backfill_disable_plugins_names(
    monkeypatch: pytest.MonkeyPatch, fake_distribution: Callable[..., str], selector: str
) -> None:
    module = fake_distribution("backfill_unit_fake", GOOD_MODULE)
    monkeypatch.setenv("BACKFILL_DISABLE_PLUGINS", selector)
    warn = io.StringIO()

    registry = Registry.discover(warn=warn)

    check_builtin(registry)
    fake = next(p for p in registry.plugins if p.name == "fakeplug")
    assert (fake.status, fake.error) == ("disabled", "named in BACKFILL_DISABLE_PLUGINS")
    assert "unit_fake_one" not in registry.extractors
    assert module not in sys.modules  # never imported
    unknown = "'other' (installed: testmanagement, throttles, fakeplug)"
    said = f"backfill: BACKFILL_DISABLE_PLUGINS names no installed plugin: {unknown}\n"
    expected = said if "other" in selector else ""
    assert warn.getvalue() == expected


def test_the_builtin_plugin_can_be_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """BACKFILL_LOAD_PLUGINS never leaves it out; BACKFILL_DISABLE_PLUGINS and --disable-plugin do."""
    monkeypatch.setenv("BACKFILL_LOAD_PLUGINS", "")
    monkeypatch.setenv("BACKFILL_DISABLE_PLUGINS", "testmanagement")
    by_env = Registry.discover(warn=io.StringIO())
    monkeypatch.delenv("BACKFILL_DISABLE_PLUGINS")
    by_option = Registry.discover(warn=io.StringIO(), disable=["backfill"])

    for registry, reason in (
        (by_env, "named in BACKFILL_DISABLE_PLUGINS"),
        (by_option, "named by --disable-plugin"),
    ):
        builtin = next(p for p in registry.plugins if p.name == "testmanagement")
        assert (builtin.name, builtin.status, builtin.error) == ("testmanagement", "disabled", reason)
        assert registry.extractors == {} and registry.validators == {}
        assert registry.pm.hook.register_commands.get_hookimpls() == []
    with pytest.raises(UsageError) as info:
        by_env.extractor("test_features")
    assert "BACKFILL_DISABLE_PLUGINS left out testmanagement (backfill)" in str(info.value)
    # By entry-point name only that plugin; by distribution name every built-in one.
    assert [(p.name, p.status) for p in by_env.plugins] == [
        ("testmanagement", "disabled"),
        ("throttles", "ok"),
    ]
    assert [(p.name, p.status) for p in by_option.plugins] == [
        ("testmanagement", "disabled"),
        ("throttles", "disabled"),
    ]
    assert by_option.throttles() == [] and [t.name for _, t in by_env.throttles()] == ["replica_lag"]


def test_disable_plugin_names_are_read_before_the_command() -> None:
    from backfill_core.app.cli import _disabled_in

    assert _disabled_in(
        ["--disable-plugin", "a,b", "--disable-plugin=c", "run", "--disable-plugin", "d"]
    ) == [
        "a",
        "b",
        "c",
    ]
    assert _disabled_in(["-h"]) == []
    assert _disabled_in(["--", "--disable-plugin", "x"]) == []
    assert _disabled_in(["--disable-plugin"]) == []


def test_the_option_leaves_out_a_plugin_of_a_registry_built_beforehand() -> None:
    """In process (the testing kit's invoke_cli) the registry exists before the option is parsed:
    the option disables it there."""
    from backfill_core.testing import invoke_cli

    registry, _ = registry_with(
        plugin("FirstPlugin", extractor("alpha")), plugin("SecondPlugin", extractor("beta"))
    )

    listed = invoke_cli(["--disable-plugin", "SecondPlugin", "list-plugins", "--json"], registry=registry)
    refused = invoke_cli(["--disable-plugin", "Third", "list-plugins"], registry=registry)

    assert listed.exit_code == 0, listed.stderr
    assert {p["name"]: (p["status"], p["error"]) for p in listed.json()} == {
        "FirstPlugin": ("ok", None),
        "SecondPlugin": ("disabled", "named by --disable-plugin"),
    }
    assert refused.exit_code == 2
    assert "no installed plugin is named 'Third' (installed: FirstPlugin, SecondPlugin)" in refused.stderr
