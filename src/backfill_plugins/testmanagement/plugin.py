"""Entry point of the built-in test-management plugin."""

from __future__ import annotations

from collections.abc import Callable

import click

from backfill_core import Extractor, Validator, hookimpl
from backfill_plugins.testmanagement.extractors import BugAttributionExtractor, TestFeatureExtractor
from backfill_plugins.testmanagement.validators import CoverageValidator


@hookimpl
def register_extractors(register: Callable[[Extractor], None]) -> None:
    register(TestFeatureExtractor())
    register(BugAttributionExtractor())


@hookimpl
def register_validators(register: Callable[[Validator], None]) -> None:
    register(CoverageValidator())


@hookimpl
def register_commands(cli: click.Group) -> None:
    from backfill_plugins.testmanagement.demo import demo

    cli.add_command(demo)
