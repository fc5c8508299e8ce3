"""Mirror looping: a ``count``-frame clip played forwards, then backwards, then forwards, ... for as long as
the output needs (the reference's ``LoopLoader`` for source frames, and its eye-condition rows)."""

from __future__ import annotations

from typing import overload

import numpy as np

__all__ = ["mirror_index"]


@overload
def mirror_index(index: int, count: int, mirror: bool = True) -> int: ...


@overload
def mirror_index(index: np.ndarray, count: int, mirror: bool = True) -> np.ndarray: ...


def mirror_index(index: int | np.ndarray, count: int, mirror: bool = True) -> int | np.ndarray:
    """Frame of a ``count``-frame clip shown at loop position ``index``: 0..n-1, n-1..0, 0..n-1, ...

    ``index`` is one position or an integer array of them (the answer then has its shape). With
    ``mirror=False`` the clip restarts instead (``index % count``).

    Raises:
        IndexError: a position is negative.
        ValueError: ``count`` is not positive.
    """
    if count <= 0:
        raise ValueError(f"a looped clip needs at least one frame, got count={count}")
    if isinstance(index, np.ndarray):
        if index.size and index.min() < 0:
            raise IndexError(f"frame indices must be >= 0, got {int(index.min())}")
        turn, offset = np.divmod(index, count)
        return np.where(turn % 2 == 1, count - 1 - offset, offset) if mirror else offset
    if index < 0:
        raise IndexError(f"frame index must be >= 0, got {index}")
    turn, offset = divmod(index, count)
    return count - 1 - offset if mirror and turn % 2 else offset
