"""Eye openness and gaze attributes from MediaPipe-style 478-point face landmarks.

Reference: ``core/utils/eye_info.py`` (``EyeAttrUtilsByMP``). For each eye, with ``O``/``I`` the outer/inner
corners, three upper/lower lid pairs and the iris centre ``B``:

    width      = |O - I|
    open       = (|lid pair 0| + |lid pair 1| + |lid pair 2|) / (width + 1e-8)
    center     = (O + I) * 0.5
    ball_direc = (B - center) / (width + 1e-8)
    eye_direc  = unit(O - I)                      (unit(v) = v / (|v| + 1e-8))
    ball_move  = (unit(B - center) - eye_direc) * |B - center|

Both eyes are computed together (eye axis last, left first) and every function is vectorised over frames.
Landmarks are pixels of the crop; the last axis is (x, y, z) (or (x, y)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ditto_research.errors import InputError

__all__ = ["MEDIAPIPE_EYES", "EyeLandmarkIndices", "eye_ball_direction", "eye_ball_move", "eye_open"]


@dataclass(frozen=True)
class EyeLandmarkIndices:
    """Landmark rows of one layout, each as a (left eye, right eye) pair."""

    outer_corner: tuple[int, int]
    inner_corner: tuple[int, int]
    lid_pairs: tuple[tuple[tuple[int, int], tuple[int, int]], ...]  # per pair: (lower, upper) rows per eye
    iris: tuple[int, int]

    @property
    def min_points(self) -> int:
        rows = [*self.outer_corner, *self.inner_corner, *self.iris]
        rows += [i for pair in self.lid_pairs for eye in pair for i in eye]
        return max(rows) + 1


MEDIAPIPE_EYES = EyeLandmarkIndices(
    outer_corner=(33, 263),
    inner_corner=(133, 362),
    lid_pairs=(((145, 374), (159, 386)), ((144, 373), (160, 387)), ((153, 380), (158, 385))),
    iris=(468, 473),
)


def _check(lmk: np.ndarray, layout: EyeLandmarkIndices) -> np.ndarray:
    lmk = np.asarray(lmk)
    if lmk.ndim != 3 or lmk.shape[1] < layout.min_points or lmk.shape[2] not in (2, 3):
        raise InputError(
            f"eye landmarks must be (n, 478, 3) (n frames of MediaPipe points; (n, N, 2) also works), got "
            f"shape {lmk.shape}; add a leading axis for a single frame"
        )
    if not np.issubdtype(lmk.dtype, np.floating):
        lmk = lmk.astype(np.float32)
    return lmk


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance over the last axis: (..., D) -> (...)."""
    return np.sqrt(((a - b) ** 2).sum(-1))


def _unit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (|a - b| + 1e-8), (..., D)."""
    return (a - b) / (_dist(a, b)[..., None] + 1e-8)


def _corners(lmk: np.ndarray, layout: EyeLandmarkIndices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outer corners, inner corners, eye widths: (n, 2, D), (n, 2, D), (n, 2) with the eye on axis 1."""
    outer, inner = lmk[:, list(layout.outer_corner)], lmk[:, list(layout.inner_corner)]
    return outer, inner, _dist(outer, inner)


def eye_open(lmk478: np.ndarray, layout: EyeLandmarkIndices = MEDIAPIPE_EYES) -> np.ndarray:
    """Lid opening relative to eye width, (n, N, D) -> (n, 2) as (left, right)."""
    lmk = _check(lmk478, layout)
    _, _, width = _corners(lmk, layout)
    lids = [_dist(lmk[:, list(lower)], lmk[:, list(upper)]) for lower, upper in layout.lid_pairs]
    total = lids[0]
    for lid in lids[1:]:
        total = total + lid
    return total / (width + 1e-8)


def _iris_offset(lmk: np.ndarray, layout: EyeLandmarkIndices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iris, eye centre, width: (n, 2, D), (n, 2, D), (n, 2)."""
    outer, inner, width = _corners(lmk, layout)
    return lmk[:, list(layout.iris)], (outer + inner) * 0.5, width


def eye_ball_direction(lmk478: np.ndarray, layout: EyeLandmarkIndices = MEDIAPIPE_EYES) -> np.ndarray:
    """Iris offset from the eye centre over eye width, (n, N, D) -> (n, D, 2) with (left, right) last."""
    lmk = _check(lmk478, layout)
    iris, center, width = _iris_offset(lmk, layout)
    return ((iris - center) / (width[..., None] + 1e-8)).transpose(0, 2, 1)


def eye_ball_move(lmk478: np.ndarray, layout: EyeLandmarkIndices = MEDIAPIPE_EYES) -> np.ndarray:
    """Iris displacement, relative to the eye's own axis, (n, N, D) -> (n, 2 * D) ordered
    Lx, Rx, Ly, Ry, Lz, Rz (the reference's (n, D, 2) flattened)."""
    lmk = _check(lmk478, layout)
    outer, inner, _ = _corners(lmk, layout)
    iris, center, _ = _iris_offset(lmk, layout)
    direction = _unit(iris, center) - _unit(outer, inner)
    move = direction * _dist(iris, center)[..., None]  # (n, 2, D)
    return move.transpose(0, 2, 1).reshape(len(lmk), -1)
