"""mirror_index: the one mirror-loop rule, for one position or an array of them (source frames, eye rows)."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_research.media.loop import mirror_index


def test_positions_play_forwards_then_backwards() -> None:
    assert [mirror_index(i, 3) for i in range(9)] == [0, 1, 2, 2, 1, 0, 0, 1, 2]
    assert [mirror_index(i, 3, mirror=False) for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert [mirror_index(i, 1) for i in range(4)] == [0, 0, 0, 0]


def test_an_array_gives_what_each_position_gives() -> None:
    positions = np.arange(40).reshape(4, 10)
    for count in (1, 3, 7):
        for mirror in (True, False):
            rows = mirror_index(positions, count, mirror)
            assert rows.shape == positions.shape
            assert rows.tolist() == [[mirror_index(int(i), count, mirror) for i in p] for p in positions]
    np.testing.assert_array_equal(mirror_index(np.arange(10), 3), [0, 1, 2, 2, 1, 0, 0, 1, 2, 2])
    assert mirror_index(np.zeros(0, np.int64), 3).shape == (0,)


@pytest.mark.parametrize("index", [-1, np.array([0, -2])])
def test_a_negative_position_is_refused(index: int | np.ndarray) -> None:
    with pytest.raises(IndexError, match="must be >= 0"):
        mirror_index(index, 3)


def test_an_empty_clip_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one frame"):
        mirror_index(0, 0)


def test_every_former_copy_is_this_rule() -> None:
    """The condition builder's eye rows and the stitch stage's source frame use this very function."""
    from ditto_research.media import source
    from ditto_research.motion import conditions
    from ditto_research.pipeline import stages

    assert conditions.mirror_index is source.mirror_index is stages.mirror_index is mirror_index
