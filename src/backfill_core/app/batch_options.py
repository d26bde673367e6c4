"""``run``'s adaptive batch size options: ``--target-batch-seconds``, ``--min-batch-size`` and
``--max-batch-size``, checked before anything is opened."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from backfill_core.engine.batchsize import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MIN_BATCH_SIZE

F = TypeVar("F", bound=Callable[..., Any])


def batch_size_options(f: F) -> F:
    f = click.option(
        "--max-batch-size",
        type=click.IntRange(1, 100_000),
        help=f"With --target-batch-seconds: the largest batch (default {DEFAULT_MAX_BATCH_SIZE}, or "
        "--batch-size if larger).",
    )(f)
    f = click.option(
        "--min-batch-size",
        type=click.IntRange(1, 100_000),
        help=f"With --target-batch-seconds: the smallest batch (default {DEFAULT_MIN_BATCH_SIZE}, or "
        "--batch-size if smaller).",
    )(f)
    return click.option(
        "--target-batch-seconds",
        type=float,
        metavar="SECONDS",
        help="Grow or shrink the batch size so that each batch's write transaction (the time its "
        "locks are held) takes about this long.",
    )(f)


def adaptive_batches(target: float | None, lowest: int | None, highest: int | None) -> dict[str, Any]:
    """The RunOptions fields for these options; a click.UsageError (exit 2) if they make no sense."""
    if target is None:
        if lowest is not None or highest is not None:
            given = "--min-batch-size" if lowest is not None else "--max-batch-size"
            raise click.UsageError(f"{given} bounds an adaptive batch size: pass --target-batch-seconds too")
        return {}
    if not (math.isfinite(target) and target > 0):
        raise click.BadParameter(
            f"{target} is not a positive number of seconds", param_hint="--target-batch-seconds"
        )
    if lowest is not None and highest is not None and lowest > highest:
        raise click.UsageError(f"--min-batch-size {lowest} is larger than --max-batch-size {highest}")
    return {"target_batch_seconds": target, "min_batch_size": lowest, "max_batch_size": highest}
