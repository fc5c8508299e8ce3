"""Per-clip motion statistics on hand-built (N, 265) motion with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_research.errors import InputError
from ditto_research.evaluate.metrics.motion_stats import (
    EYE_KEYPOINTS,
    LIP_KEYPOINTS,
    keypoint_energy,
    motion_stats,
)

EXP_START = 202  # exp columns 202:265, keypoint k at 202 + 3 k + (x, y, z)


def _motion(frames: int) -> np.ndarray:
    """Still motion: zero expression, pitch / yaw / roll logits peaked at bin 32 (-1.5 degrees)."""
    motion = np.zeros((frames, 265), np.float32)
    for start in (1, 67, 133):
        motion[:, start + 32] = 60.0
    return motion


def test_lip_energy_counts_only_lip_keypoints() -> None:
    motion = _motion(8)
    amplitude = 0.02
    motion[:, EXP_START + 3 * 6 + 1] = amplitude * np.array([1, -1] * 4)  # keypoint 6 (lip), y, alternating
    motion[:, EXP_START + 3 * 0 + 0] = np.arange(8)  # keypoint 0 is in no group
    stats = motion_stats(motion)
    # Keypoint 6 is amplitude away from its mean in every frame and jumps 2 * amplitude each frame; the other
    # five lip keypoints are still, so the group means divide by 6.
    assert stats.lip_energy == pytest.approx(amplitude**2 / 6, rel=1e-5)
    assert stats.lip_velocity == pytest.approx((2 * amplitude) ** 2 / 6, rel=1e-5)
    assert stats.eye_energy == 0.0 and stats.eye_velocity == 0.0
    assert stats.num_frames == 8


def test_eye_energy_counts_only_eye_keypoints() -> None:
    motion = _motion(4)
    motion[:, EXP_START + 3 * 18 + 2] = [0.0, 0.1, 0.0, 0.1]  # keypoint 18 (eye), z
    stats = motion_stats(motion)
    assert stats.eye_energy == pytest.approx(0.05**2 / 5, rel=1e-5)
    assert stats.eye_velocity == pytest.approx(0.1**2 / 5, rel=1e-5)
    assert stats.lip_energy == 0.0
    assert set(LIP_KEYPOINTS).isdisjoint(EYE_KEYPOINTS)


def test_pose_translation_and_scale_ranges() -> None:
    motion = _motion(3)
    motion[1, 1:67] = 0.0
    motion[1, 1 + 42] = 60.0  # pitch bin 42 on frame 1: 10 bins = 30 degrees from bin 32
    motion[2, 67:133] = 0.0
    motion[2, 67 + 27] = 60.0  # yaw bin 27 on frame 2: 15 degrees
    motion[:, 199:202] = [[0.0, 0.1, 5.0], [0.3, -0.1, -5.0], [0.1, 0.0, 0.0]]
    motion[:, 0] = [0.0, 0.05, -0.05]
    stats = motion_stats(motion)
    assert stats.pitch_range_deg == pytest.approx(30.0, abs=1e-3)
    assert stats.yaw_range_deg == pytest.approx(15.0, abs=1e-3)
    assert stats.roll_range_deg == pytest.approx(0.0, abs=1e-6)
    assert stats.tx_range == pytest.approx(0.3) and stats.ty_range == pytest.approx(0.2)  # tz is not used
    assert stats.scale_range == pytest.approx(0.1)
    assert set(stats.as_dict()) >= {"lip_energy", "yaw_range_deg", "tx_range"}


def test_single_frame_and_328_wide_motion() -> None:
    motion = np.concatenate([_motion(1), np.ones((1, 63), np.float32)], axis=1)
    stats = motion_stats(motion)
    assert stats.num_frames == 1 and stats.lip_velocity == 0.0 and stats.yaw_range_deg == 0.0
    assert keypoint_energy(np.zeros((1, 63)), LIP_KEYPOINTS) == (0.0, 0.0)


@pytest.mark.parametrize("bad", [np.zeros((0, 265)), np.zeros((4, 264)), np.zeros(265)])
def test_bad_shapes(bad: np.ndarray) -> None:
    with pytest.raises(InputError, match="265"):
        motion_stats(bad)


def test_non_finite_motion() -> None:
    motion = _motion(3)
    motion[1, 210] = np.nan
    with pytest.raises(InputError, match="NaN"):
        motion_stats(motion)
