"""Eye attributes: golden parity, several frames at once, a hand-computed geometry, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_research.errors import InputError
from ditto_research.face.eye import MEDIAPIPE_EYES, eye_ball_direction, eye_ball_move, eye_open

FUNCTIONS = {"LR_open": eye_open, "LR_ball_move": eye_ball_move, "LR_ball_direc": eye_ball_direction}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_eye_attributes_match_golden(load_golden, name: str) -> None:
    g = load_golden("eye_info")
    ours = FUNCTIONS[name](g["lmk478"])
    assert ours.dtype == g[name].dtype and ours.shape == g[name].shape
    np.testing.assert_array_equal(ours, g[name])  # the reference's float32 ops in its order: measured exact


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_frames_are_independent(load_golden, name: str) -> None:
    """n > 1: every row equals the single-frame result (no mixing across the frame axis)."""
    base = load_golden("eye_info")["lmk478"][0]
    rng = np.random.default_rng(0)
    frames = np.stack([base, base * 1.1 + 3.0, base + rng.normal(0, 2, base.shape)]).astype(np.float32)
    batch = FUNCTIONS[name](frames)
    assert batch.shape[0] == 3
    for i in range(3):
        np.testing.assert_array_equal(batch[i], FUNCTIONS[name](frames[i : i + 1])[0])
    assert not np.array_equal(batch[0], batch[2])


def _synthetic_eyes() -> np.ndarray:
    """One frame: left eye from x=0 (outer) to x=10 (inner), right eye mirrored at x=30..20, lids 1, 2, 3
    apart (left) and 2, 2, 2 apart (right); left iris at (7, 1, 0), right iris at the eye centre."""
    lmk = np.zeros((1, 478, 3), np.float32)
    for eye, (outer_x, inner_x, gaps) in enumerate([(0.0, 10.0, (1, 2, 3)), (30.0, 20.0, (2, 2, 2))]):
        lmk[0, MEDIAPIPE_EYES.outer_corner[eye]] = (outer_x, 0, 0)
        lmk[0, MEDIAPIPE_EYES.inner_corner[eye]] = (inner_x, 0, 0)
        for (lower, upper), gap in zip(MEDIAPIPE_EYES.lid_pairs, gaps, strict=True):
            lmk[0, lower[eye]] = ((outer_x + inner_x) / 2, gap / 2, 0)
            lmk[0, upper[eye]] = ((outer_x + inner_x) / 2, -gap / 2, 0)
    lmk[0, MEDIAPIPE_EYES.iris[0]] = (7, 1, 0)
    lmk[0, MEDIAPIPE_EYES.iris[1]] = (25, 0, 0)
    return lmk


def test_synthetic_geometry() -> None:
    lmk = _synthetic_eyes()
    np.testing.assert_allclose(eye_open(lmk), [[0.6, 0.6]], rtol=1e-6)
    direc = eye_ball_direction(lmk)  # (1, 3, 2): axis 1 = x, y, z; axis 2 = left, right
    np.testing.assert_allclose(direc[0, :, 0], [0.2, 0.1, 0.0], atol=1e-7)
    np.testing.assert_allclose(direc[0, :, 1], [0.0, 0.0, 0.0], atol=1e-7)
    # Left: (unit(iris - centre) - unit(outer - inner)) * |iris - centre| = (2 + sqrt 5, 1, 0).
    move = eye_ball_move(lmk)
    np.testing.assert_allclose(move[0], [2 + np.sqrt(5), 0.0, 1.0, 0.0, 0.0, 0.0], atol=1e-5)


@pytest.mark.parametrize("shape", [(478, 3), (1, 400, 3), (1, 478, 4), (2, 478)])
def test_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    lmk = np.zeros(shape, np.float32)
    for fn in FUNCTIONS.values():
        with pytest.raises(InputError, match=r"\(n, 478, 3\)"):
            fn(lmk)
