"""MotionStitcher: golden parity with the reference MotionStitch, and the behaviour of every control."""

from __future__ import annotations

import random
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
import torch

from ditto_research.errors import ConfigError
from ditto_research.models.stitching import StitchingNetwork
from ditto_research.motion.keypoints import bin66_to_degree, transform_keypoint
from ditto_research.motion.stitch import (
    MOTION_KEYS,
    FrameControls,
    MotionStitcher,
    blink_schedule,
    fade_toward,
    fix_gaze,
    parse_ctrl_info,
    stitch_sequence,
    with_fade_in_out,
)
from tests.helpers import max_abs_err

# x_d: 5.6x the measured max abs error 1.8e-7 (|x_d| ~ 1; no fp64 yardstick). x_s: measured bit-identical.
GOLDEN_TOL = 1e-6
GOLDEN_CTRL_NAMES = ("fade_alpha", "delta_pitch", "delta_yaw", "delta_roll")


@pytest.fixture(scope="module")
def golden(load_golden: Callable[[str], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return load_golden("motion_stitch")


@pytest.fixture(scope="module")
def seeded_network(det_init: ModuleType, golden: dict[str, np.ndarray]) -> StitchingNetwork:
    """The stitching network with the golden's own det_init fill."""
    network = StitchingNetwork().eval()
    network.load_state_dict(det_init.fill_state_dict(network, int(golden["seed"])), strict=True)
    return network


def golden_frame_controls(golden: dict[str, np.ndarray], frame: int) -> dict[str, object]:
    """The per-frame kwargs of the golden run: NaN = absent, fade_all_keys = fade every motion key."""
    controls: dict[str, object] = {}
    for name in GOLDEN_CTRL_NAMES:
        value = golden[f"ctrl_{name}"][frame]
        if not np.isnan(value):
            controls[name] = float(value)
    if golden["ctrl_fade_all_keys"][frame]:
        controls["fade_out_keys"] = MOTION_KEYS
    return controls


@pytest.mark.parametrize("run", ["", "nostitch_", "eye_"])
def test_golden_parity(golden: dict[str, np.ndarray], seeded_network: StitchingNetwork, run: str) -> None:
    x_s_info = {k: golden[f"x_s_info_{k}"][0] for k in (*MOTION_KEYS, "kp")}
    n_frames = int(golden["N_d"])
    extra: dict[str, object] = {}
    if run == "nostitch_":
        extra["use_stitching"] = False
    if run == "eye_":
        extra.update(delta_eye_arr=golden["delta_eye_arr"], delta_eye_open_n=int(golden["delta_eye_open_n"]))
    stitcher = MotionStitcher(
        seeded_network,
        x_s_info=x_s_info,
        n_frames=n_frames,
        relative_d=True,
        drive_eye=True,
        fade_type="s",
        is_image=True,
        overall_controls={},
        **extra,
    )
    if run == "eye_":
        assert stitcher.blink_indices == golden["eye_delta_eye_idx_list"].tolist()

    x_s, x_d = [], []
    for frame in range(n_frames):
        x_d_info = {k: golden[f"x_d_info_{k}"][frame] for k in MOTION_KEYS}
        source, driving = stitcher(x_s_info, x_d_info, golden_frame_controls(golden, frame))
        assert source.shape == driving.shape == (1, 21, 3) and driving.dtype == np.float32
        x_s.append(source)
        x_d.append(driving)
    np.testing.assert_array_equal(np.stack(x_s), golden[f"{run}x_s"])
    assert max_abs_err(np.stack(x_d), golden[f"{run}x_d"]) <= GOLDEN_TOL


# ---- synthetic motion --------------------------------------------------------------------------------------


def synthetic_motion(seed: int, n_frames: int) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(seed)

    def record(with_kp: bool) -> dict[str, np.ndarray]:
        out = {
            "scale": (1.4 + 0.1 * rng.standard_normal((1, 1))).astype(np.float32),
            "pitch": rng.standard_normal((1, 66)).astype(np.float32),
            "yaw": rng.standard_normal((1, 66)).astype(np.float32),
            "roll": rng.standard_normal((1, 66)).astype(np.float32),
            "t": (0.03 * rng.standard_normal((1, 3))).astype(np.float32),
            "exp": (0.02 * rng.standard_normal((1, 63))).astype(np.float32),
        }
        if with_kp:
            out["kp"] = (0.4 * rng.standard_normal((1, 63))).astype(np.float32)
        return out

    return record(True), [record(False) for _ in range(n_frames)]


def test_fade_out_ends_at_source_pose() -> None:
    x_s_info, x_d_infos = synthetic_motion(0, 12)
    ctrl = with_fade_in_out({}, n_frames=12, fade_in=3, fade_out=4)
    assert [ctrl[i].fade_alpha for i in (0, 1, 2)] == pytest.approx([0, 1 / 3, 2 / 3])
    assert [ctrl[i].fade_alpha for i in range(7, 12)] == pytest.approx([1, 0.75, 0.5, 0.25, 0])
    stitcher = MotionStitcher(
        None, x_s_info=x_s_info, n_frames=12, fade_type="s", fade_out_keys=MOTION_KEYS, use_stitching=False
    )
    x_s, x_d = stitch_sequence(stitcher, x_s_info, x_d_infos, ctrl)
    assert x_s.shape == x_d.shape == (12, 1, 21, 3)
    # fade_alpha 0 (first and last frame): every key is the source's -> the undriven source keypoints.
    assert max_abs_err(x_d[-1], x_s[-1]) < 1e-6
    assert max_abs_err(x_d[0], x_s[0]) < 1e-6
    assert max_abs_err(x_d[5], x_s[5]) > 1e-3  # mid-clip frames are driven


def test_fade_type_off_ignores_fade_alpha() -> None:
    x_s_info, x_d_infos = synthetic_motion(1, 3)
    runs = []
    for controls in (None, {"fade_alpha": 0.0}):
        stitcher = MotionStitcher(None, x_s_info=x_s_info, use_stitching=False, fade_out_keys=MOTION_KEYS)
        runs.append([stitcher(x_s_info, x_d, controls)[1] for x_d in x_d_infos])
    np.testing.assert_array_equal(np.stack(runs[0]), np.stack(runs[1]))


def test_yaw_delta_adds_exactly_ten_degrees() -> None:
    x_s_info, x_d_infos = synthetic_motion(2, 2)
    plain = MotionStitcher(None, x_s_info=x_s_info, use_stitching=False)
    turned = MotionStitcher(None, x_s_info=x_s_info, use_stitching=False)
    for x_d in x_d_infos:
        base = plain.drive_motion(x_s_info, x_d)
        moved = turned.drive_motion(x_s_info, x_d, {"delta_yaw": 10.0})
        assert moved["yaw"].shape == (1,)  # converted to degrees
        yaw_change = float(moved["yaw"][0]) - float(bin66_to_degree(base["yaw"])[0])
        assert yaw_change == pytest.approx(10.0, abs=1e-5)
        np.testing.assert_array_equal(moved["pitch"], base["pitch"])
        # The head turn feeds the gaze fix: pupils' x moves by 0.26 * 10 * (0.0007 | 0.001).
        assert moved["exp"][0, 33] != base["exp"][0, 33]
        plain.frame_index += 1
        turned.frame_index += 1


def test_alpha_after_delta_scales_degrees() -> None:
    x_s_info, (x_d,) = synthetic_motion(3, 1)
    stitcher = MotionStitcher(None, x_s_info=x_s_info, use_stitching=False)
    base = float(bin66_to_degree(stitcher.drive_motion(x_s_info, x_d)["pitch"])[0])
    scaled = stitcher.drive_motion(x_s_info, x_d, {"delta_pitch": 4.0, "alpha_pitch": 0.5})
    assert float(scaled["pitch"][0]) == pytest.approx((base + 4.0) * 0.5, abs=1e-5)


def test_overall_controls_merge_per_key() -> None:
    merged = FrameControls(delta_yaw=10.0).merged_over(FrameControls(delta_yaw=5.0, vad_alpha=0.5))
    assert merged == FrameControls(delta_yaw=10.0, vad_alpha=0.5)
    x_s_info, (x_d,) = synthetic_motion(4, 1)
    stitcher = MotionStitcher(
        None, x_s_info=x_s_info, use_stitching=False, overall_controls={"delta_yaw": 5.0}
    )
    base = float(
        bin66_to_degree(
            MotionStitcher(None, x_s_info=x_s_info, use_stitching=False).drive_motion(x_s_info, x_d)["yaw"]
        )[0]
    )
    assert float(stitcher.drive_motion(x_s_info, x_d)["yaw"][0]) == pytest.approx(base + 5.0, abs=1e-5)
    assert float(stitcher.drive_motion(x_s_info, x_d, {"delta_yaw": 1.0})["yaw"][0]) == pytest.approx(
        base + 1.0, abs=1e-5
    )


def test_vad_alpha_zero_gives_source_expression_before_gaze() -> None:
    x_s_info, (x_d,) = synthetic_motion(5, 1)
    stitcher = MotionStitcher(None, x_s_info=x_s_info, use_stitching=False, drive_eye=False)
    motion = stitcher.drive_motion(x_s_info, x_d, {"vad_alpha": 0.0})
    np.testing.assert_allclose(motion["exp"], x_s_info["exp"], atol=1e-7)


def test_unknown_control_raises_config_error_naming_valid_ones() -> None:
    with pytest.raises(ConfigError, match="delta_yaw") as info:
        FrameControls.from_mapping({"delta_yaww": 3.0})
    assert "delta_yaww" in str(info.value) and "fade_alpha" in str(info.value)
    x_s_info, (x_d,) = synthetic_motion(6, 1)
    stitcher = MotionStitcher(None, x_s_info=x_s_info, use_stitching=False)
    with pytest.raises(ConfigError, match="valid controls"):
        stitcher(x_s_info, x_d, {"yaw": 1.0})
    with pytest.raises(ConfigError, match="valid controls"):
        MotionStitcher(None, use_stitching=False, overall_controls={"blink": 1})
    with pytest.raises(ConfigError, match="not a number"):
        FrameControls.from_mapping({"delta_yaw": "left"})
    with pytest.raises(ConfigError, match="motion key"):
        FrameControls.from_mapping({"fade_out_keys": ["exp", "mouth"]})


def test_invalid_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="fade_type"):
        MotionStitcher(None, use_stitching=False, fade_type="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stitching network"):
        MotionStitcher(None)
    with pytest.raises(ConfigError, match="motion key"):
        MotionStitcher(None, use_stitching=False, use_d_keys=("exp", "lips"))


def test_parse_ctrl_info_accepts_yaml_keys_and_lists() -> None:
    parsed = parse_ctrl_info({"0": {"fade_alpha": 0}, 7: {"delta_exp": [0.0] * 63}})
    assert parsed[0].fade_alpha == 0.0 and parsed[7].delta_exp == (0.0,) * 63
    assert parse_ctrl_info([{}, {"vad_alpha": 0.2}])[1].vad_alpha == 0.2
    with pytest.raises(ConfigError, match="frame index"):
        parse_ctrl_info({"first": {}})
    with pytest.raises(ConfigError, match=r"key -1 is not a frame index \(an integer >= 0\)"):
        parse_ctrl_info({-1: {}})
    with pytest.raises(ConfigError, match="ctrl.yaml, frame 2: frame control delta_yaw='3' is not a number"):
        parse_ctrl_info({2: {"delta_yaw": "3"}}, source="ctrl.yaml")
    with pytest.raises(ConfigError, match="vad_alpha=True is not a number"):
        FrameControls.from_mapping({"vad_alpha": True})
    with pytest.raises(ConfigError, match="is not finite"):
        FrameControls.from_mapping({"delta_roll": float("nan")})


def test_frame_controls_have_one_definition() -> None:
    """The stitcher and the config schema use the torch-free motion.controls definitions."""
    from ditto_research.motion import controls

    assert FrameControls is controls.FrameControls and parse_ctrl_info is controls.parse_ctrl_info


def test_blink_schedule_reproducible_from_seed() -> None:
    first = blink_schedule(1000, 8, 0, random.Random(7))
    assert first == blink_schedule(1000, 8, 0, random.Random(7))
    assert first != blink_schedule(1000, 8, 0, random.Random(8))
    # The reference draws the first gap, then the tail gap, then one gap per blink (after random.seed(s)).
    draws = random.Random(7)
    first_gap, tail_gap = draws.randint(60, 100), draws.randint(60, 100)
    assert first[:first_gap] == [0] * first_gap
    assert first[first_gap : first_gap + 8] == list(range(8))
    assert first[-max(tail_gap, 8) :] == [0] * max(tail_gap, 8)
    starts = [i for i in range(1, 1000) if first[i] == 1]
    gaps = np.diff(starts) - 8
    assert len(starts) >= 5 and gaps.min() >= 60 and gaps.max() <= 100
    generator = blink_schedule(1000, 8, 0, np.random.default_rng(3))
    assert generator == blink_schedule(1000, 8, 0, np.random.default_rng(3))
    assert blink_schedule(50, 8, -1) == [0] * 50
    assert blink_schedule(40, 4, [5, 10])[:24] == [0] * 5 + [0, 1, 2, 3] + [0] * 10 + [0, 1, 2, 3] + [0]


def test_stitcher_blinks_from_seeded_rng() -> None:
    eyes = np.random.default_rng(0).standard_normal((6, 63)).astype(np.float32)

    def make(seed: int) -> MotionStitcher:
        return MotionStitcher(
            None,
            use_stitching=False,
            n_frames=400,
            delta_eye_arr=eyes,
            delta_eye_open_n=0,
            rng=random.Random(seed),
        )

    assert make(1).blink_indices == make(1).blink_indices
    assert make(1).blink_indices != make(2).blink_indices
    assert max(make(1).blink_indices) == 5


def test_fix_gaze_branches() -> None:
    exp = np.zeros((1, 63), dtype=np.float32)
    right = fix_gaze(exp, (0.0, 0.0), np.array([10.0]), np.array([0.0]))
    left = fix_gaze(exp, (0.0, 0.0), np.array([-10.0]), np.array([5.0]))
    assert right[0, 33] == pytest.approx(2.6 * 0.0007) and right[0, 45] == pytest.approx(2.6 * 0.001)
    assert left[0, 33] == pytest.approx(-2.6 * 0.001) and left[0, 45] == pytest.approx(-2.6 * 0.0007)
    assert left[0, 34] == left[0, 46] == pytest.approx(-1.4 * 0.001)
    assert not exp.any()  # input untouched


def test_video_source_uses_each_frame_source() -> None:
    x_s_info, (x_d,) = synthetic_motion(7, 1)
    other_source = dict(x_s_info, kp=x_s_info["kp"] * 2)
    stitcher = MotionStitcher(None, use_stitching=False, is_image=False)
    first_s, _ = stitcher(x_s_info, x_d)
    second_s, _ = stitcher(other_source, x_d)
    np.testing.assert_allclose(first_s, transform_keypoint(x_s_info), atol=1e-7)
    np.testing.assert_allclose(second_s, transform_keypoint(other_source), atol=1e-7)


def test_relative_driving_first_frame_reproduces_source_pose_keys() -> None:
    x_s_info, x_d_infos = synthetic_motion(8, 2)
    stitcher = MotionStitcher(None, x_s_info=x_s_info, use_stitching=False, drive_eye=False)
    motion = stitcher.drive_motion(x_s_info, x_d_infos[0])  # d0 = this frame -> x_s + 0
    for key in ("pitch", "yaw", "roll", "t", "scale"):
        np.testing.assert_array_equal(motion[key], x_s_info[key])
    weighted = MotionStitcher(
        None,
        x_s_info=x_s_info,
        use_stitching=False,
        d0=x_d_infos[0],
        use_d_keys={"t": 0.5, "exp": 1.0},
        drive_eye=False,
    ).drive_motion(x_s_info, x_d_infos[1])
    expected_t = x_s_info["t"] + (x_d_infos[1]["t"] - x_d_infos[0]["t"]) * 0.5
    np.testing.assert_allclose(weighted["t"], expected_t, atol=1e-7)
    np.testing.assert_array_equal(weighted["yaw"], x_s_info["yaw"])  # not driven


def test_stitching_network_changes_driving_keypoints(seeded_network: StitchingNetwork) -> None:
    x_s_info, x_d_infos = synthetic_motion(9, 2)
    with_net = MotionStitcher(seeded_network, x_s_info=x_s_info)
    without = MotionStitcher(None, x_s_info=x_s_info, use_stitching=False)
    for x_d in x_d_infos:
        x_s, stitched = with_net(x_s_info, x_d)
        _, raw = without(x_s_info, x_d)
        expected = seeded_network(torch.from_numpy(x_s), torch.from_numpy(raw)).numpy()
        np.testing.assert_allclose(stitched, expected, atol=1e-6)
        assert max_abs_err(stitched, raw) > 1e-4


def test_reference_scale_weights_driven_changes() -> None:
    x_s_info, x_d_infos = synthetic_motion(10, 2)
    source_scale = float(x_s_info["scale"][0, 0])
    stitcher = MotionStitcher(
        None, x_s_info=x_s_info, use_stitching=False, drive_eye=False, reference_scale=2 * source_scale
    )
    stitcher.drive_motion(x_s_info, x_d_infos[0])  # sets d0
    motion = stitcher.drive_motion(x_s_info, x_d_infos[1])
    change = x_d_infos[1]["yaw"] - x_d_infos[0]["yaw"]
    np.testing.assert_allclose(motion["yaw"], x_s_info["yaw"] + change * 2, atol=1e-5)
    np.testing.assert_allclose(
        motion["t"], x_s_info["t"] + (x_d_infos[1]["t"] - x_d_infos[0]["t"]), atol=1e-7
    )


def test_fading_a_delta_controlled_angle_matches_the_reference_or_the_fix() -> None:
    """The reference blends a delta_yaw angle (degrees) against the fade target's logits by broadcasting; the
    fix (control.fade_pose_in_degrees) blends both in degrees."""
    rng = np.random.default_rng(0)
    degrees = np.array([12.5], np.float32)
    target = {"yaw": rng.standard_normal((1, 66)).astype(np.float32)}
    quirk = fade_toward({"yaw": degrees.copy()}, target, 0.25, ["yaw"])
    np.testing.assert_array_equal(quirk["yaw"], degrees * 0.25 + target["yaw"] * 0.75)
    assert quirk["yaw"].shape == (1, 66)  # the reference's broadcast: a garbled angle
    fixed = fade_toward({"yaw": degrees.copy()}, target, 0.25, ["yaw"], pose_in_degrees=True)
    np.testing.assert_allclose(
        fixed["yaw"], degrees * 0.25 + bin66_to_degree(target["yaw"]) * 0.75, rtol=1e-6
    )
