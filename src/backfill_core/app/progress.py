"""Progress bars on stderr, only for a person at a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm

from backfill_core.engine.options import Progress, ProgressFactory


def tqdm_progress(quiet: bool) -> ProgressFactory:
    """A tqdm bar per extractor, with rate and ETA; silent when quiet or stderr is no terminal."""
    disabled = quiet or not sys.stderr.isatty()

    def make(name: str, total: int) -> Progress:
        return tqdm(
            total=total,
            desc=name,
            unit="row",
            unit_scale=True,
            file=sys.stderr,
            disable=disabled,
            dynamic_ncols=True,
            leave=True,
        )

    return make
