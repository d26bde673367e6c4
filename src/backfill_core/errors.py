"""Exit codes and the exceptions that map onto them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum


class ExitCode(IntEnum):
    """What the ``backfill`` command returns; part of the CLI contract."""

    OK = 0
    FAILED = 1  # validation failed or the error rate went over --max-error-rate
    USAGE = 2  # unknown extractor, bad option
    ENVIRONMENT = 3  # database missing or unreachable, schema missing, plugin failed to load
    INTERRUPTED = 130  # SIGINT (Ctrl-C): stopped after the batch in flight; the run can resume
    TERMINATED = 143  # SIGTERM: likewise


class RecordError(Exception):
    """One source row cannot be turned into changes; it contributes nothing to the run.

    This is the only exception an extractor's ``extract`` may raise on bad input.
    ``kind`` is a short machine-readable category such as ``"invalid-json"``.
    """

    def __init__(self, message: str, *, kind: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


class BackfillError(Exception):
    """An error that ends the command with ``exit_code`` and a one-paragraph message."""

    exit_code: ExitCode = ExitCode.ENVIRONMENT


class UsageError(BackfillError):
    """The command line asks for something that does not exist."""

    exit_code = ExitCode.USAGE


class EnvironmentProblem(BackfillError):
    """The database, the schema or a plugin is not in a state the run can use."""

    exit_code = ExitCode.ENVIRONMENT


class DatabaseUnavailable(EnvironmentProblem):
    """The database is missing, unreachable, locked past its timeout or out of space."""


class SchemaMissing(EnvironmentProblem):
    """A table or column an extractor or validator needs does not exist."""


class PluginUnavailable(EnvironmentProblem):
    """The requested extractor or validator comes from a plugin that failed to load."""


class NothingToDo(EnvironmentProblem):
    """Every extractor or validator the command chose for itself was skipped: the database lacks
    their tables. ``skipped`` describes each (as ``--json`` shows it)."""

    def __init__(self, message: str, skipped: Sequence[Mapping[str, str]]) -> None:
        super().__init__(message)
        self.skipped = list(skipped)
