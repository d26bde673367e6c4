"""IN-list padding: every lookup's list of keys is padded, with its own last key, to a multiple
of IN_PADDING, so that the driver's statement cache holds a handful of statement shapes instead
of one per batch length (writer.padded_in). Pinned here because a wrong padding changes no result,
only the cache, so no other test would see it."""

from __future__ import annotations

import pytest

from backfill_core.engine.writer import IN_PADDING, padded_in as _padded


@pytest.mark.parametrize("n", [1, 2, IN_PADDING - 1, IN_PADDING, IN_PADDING + 1, 3 * IN_PADDING - 7])
def test_keys_are_padded_with_the_last_key_to_a_multiple_of_the_padding(n: int) -> None:
    keys = list(range(n))

    padded = _padded(keys)

    assert len(padded) == -(-n // IN_PADDING) * IN_PADDING
    assert padded[:n] == keys
    assert set(padded[n:]) <= {n - 1}


def test_no_keys_stay_no_keys() -> None:
    assert _padded([]) == []
