"""Motion layout and conversions: golden cvt_fmt outputs plus round trips and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_research.errors import InputError
from ditto_research.motion.format import MOTION_LAYOUT, MotionInfo, clip_motion, source_motion_vector

KEYS = ("scale", "pitch", "yaw", "roll", "t", "exp")


def _random_motion(n: int, width: int = 265, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, width)).astype(np.float32)


def test_layout_offsets() -> None:
    expected = {
        "scale": (0, 1),
        "pitch": (1, 67),
        "yaw": (67, 133),
        "roll": (133, 199),
        "t": (199, 202),
        "exp": (202, 265),
        "kp": (265, 328),
    }
    for key, (start, stop) in expected.items():
        assert MOTION_LAYOUT.slice(key) == slice(start, stop)
    assert MOTION_LAYOUT.motion_dim == 265
    assert MOTION_LAYOUT.full_dim == 328
    assert MOTION_LAYOUT.pose_dim == 202
    assert MOTION_LAYOUT.motion_keys == KEYS
    with pytest.raises(KeyError):
        MOTION_LAYOUT.slice("eye")


def test_golden_cvt_fmt(load_golden) -> None:
    g = load_golden("audio2motion_offline")
    info = MotionInfo.from_array(g["res_kp_seq"][0])
    assert info.kp is None and len(info) == g["res_kp_seq"].shape[1]
    frames = info.to_frame_dicts()
    for key in KEYS:
        ref = g[f"x_d_{key}"]  # [N, 1, dim]
        np.testing.assert_array_equal(np.stack([f[key] for f in frames]), ref)
        np.testing.assert_array_equal(getattr(info, key), ref[:, 0])
    assert set(frames[0]) == set(KEYS)


def test_golden_source_motion_vector(load_golden) -> None:
    g = load_golden("audio2motion_offline")
    x_s_info = {k: g[f"x_s_{k}"].reshape(1, -1) for k in (*KEYS, "kp")}
    vec = source_motion_vector(x_s_info)
    assert vec.shape == (265,) and vec.dtype == np.float32
    np.testing.assert_array_equal(vec, g["chunk_kp_cond"][0, 0])
    assert vec[0] == np.float32(g["x_s_scale"].item() - 1)


def test_array_round_trip_and_scale_offset() -> None:
    motion = _random_motion(7)
    info = MotionInfo.from_array(motion)
    np.testing.assert_array_equal(info.scale, motion[:, :1] + 1)
    np.testing.assert_array_equal(info.exp, motion[:, 202:])
    # (x + 1) - 1 rounds in float32, so scale comes back to within an ulp of 1
    np.testing.assert_allclose(info.to_array(), motion, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(info.to_array()[:, 1:], motion[:, 1:])
    with pytest.raises(InputError):
        info.to_array(include_kp=True)


def test_array_round_trip_with_kp() -> None:
    motion = _random_motion(3, width=328, seed=1)
    info = MotionInfo.from_array(motion)
    assert info.kp is not None
    np.testing.assert_array_equal(info.kp, motion[:, 265:])
    np.testing.assert_allclose(info.to_array(include_kp=True), motion, rtol=0, atol=1e-7)
    assert set(info.frame(0)) == {*KEYS, "kp"}


def test_frame_dicts_round_trip() -> None:
    info = MotionInfo.from_array(_random_motion(5, seed=2))
    frames = info.to_frame_dicts()
    assert frames[3]["pitch"].shape == (1, 66) and frames[3]["scale"].shape == (1, 1)
    back = MotionInfo.from_frame_dicts(frames)
    np.testing.assert_array_equal(back.to_array(), info.to_array())
    # reference-style dicts with (1, 1, dim) values are accepted too
    nested = [{k: v[None] for k, v in f.items()} for f in frames]
    np.testing.assert_array_equal(MotionInfo.from_frame_dicts(nested).to_array(), info.to_array())


def test_single_row_is_one_frame() -> None:
    row = _random_motion(1, seed=3)[0]
    assert len(MotionInfo.from_array(row)) == 1


@pytest.mark.parametrize("shape", [(4, 264), (4, 300), (2, 3, 265)])
def test_bad_width_raises(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError):
        MotionInfo.from_array(np.zeros(shape, np.float32))


def test_bad_dicts_raise() -> None:
    frame = MotionInfo.from_array(_random_motion(1)).frame(0)
    with pytest.raises(InputError):
        source_motion_vector({k: v for k, v in frame.items() if k != "t"})
    with pytest.raises(InputError):
        MotionInfo.from_frame_dicts([])
    with pytest.raises(InputError):
        MotionInfo.from_frame_dicts([frame, {k: v for k, v in frame.items() if k != "exp"}])
    with pytest.raises(InputError):
        source_motion_vector({**frame, "pitch": np.zeros((1, 65), np.float32)})
    two = MotionInfo.from_array(_random_motion(2)).to_array()
    with pytest.raises(InputError):
        source_motion_vector({k: two[:, MOTION_LAYOUT.slice(k)] for k in KEYS})


def test_clip_motion() -> None:
    motion = _random_motion(6, seed=4)
    assert clip_motion(motion, None) is motion
    bounds = np.stack([np.full(265, -0.5, np.float32), np.full(265, 0.5, np.float32)])
    clipped = clip_motion(motion, bounds)
    assert clipped.min() >= -0.5 and clipped.max() <= 0.5
    np.testing.assert_array_equal(clipped, np.clip(motion, -0.5, 0.5))
    with pytest.raises(InputError):
        clip_motion(motion, bounds[:, :10])
