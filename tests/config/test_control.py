"""control.*: emotion, per-frame controls and blink arrays are checked when the config validates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ditto_research.config import ControlConfig, compose, to_config
from ditto_research.constants import EMOTION_DIM, SOURCE_KP_DIM
from ditto_research.errors import ConfigError
from ditto_research.motion.conditions import EMOTION_LABELS, parse_emotion
from ditto_research.motion.controls import FrameControls, load_emotion

FORMS = (
    "give a label 0..7 or its name "
    "(0 angry, 1 disgust, 2 fear, 3 happy, 4 neutral, 5 sad, 6 surprise, 7 contempt)"
)


def control(overrides: list[str]) -> ControlConfig:
    return to_config(compose("infer", overrides)).control


def config_error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        control(overrides)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ---- control.emo -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("control.emo=3", 3),
        ("control.emo=happy", 3),
        ("control.emo=[3,4]", [3, 4]),
        ("control.emo=[happy,neutral]", [3, 4]),
        ("control.emo=[[4],[3,4],[]]", [[4], [3, 4], []]),
    ],
)
def test_good_emotion_forms_validate_and_load_like_the_condition_builder(override, expected):
    emo = control([override]).emo
    rows = load_emotion(emo)
    np.testing.assert_array_equal(rows, parse_emotion(expected))
    assert rows.shape[1] == EMOTION_DIM


def test_emotion_npy_of_weights(tmp_path):
    path = tmp_path / "emo.npy"
    weights = np.random.default_rng(0).dirichlet(np.ones(EMOTION_DIM), size=5).astype(np.float32)
    np.save(path, weights)
    np.testing.assert_array_equal(load_emotion(control([f"control.emo={path}"]).emo), weights)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("control.emo=9", "control.emo=9 is not valid (9 is not a label)"),
        ("control.emo=-1", "control.emo=-1 is not valid"),
        (
            "control.emo=hapy",
            "control.emo='hapy' is not valid ('hapy' is not a label; did you mean 'happy'?)",
        ),
        ("control.emo=[3,12]", "control.emo=[3, 12] is not valid (12 is not a label)"),
        ("control.emo=[[4],[3,sda]]", "('sda' is not a label; did you mean 'sad'?)"),
        ("control.emo=2.5", "(2.5 is not a label)"),
        ("control.emo=true", "(True is not a label)"),
        ("control.emo=[]", "control.emo=[] is not valid"),
        ("control.emo=missing/emo.npy", "control.emo file missing/emo.npy does not exist"),
    ],
)
def test_bad_emotion_names_the_value_and_the_forms(override, named):
    message = config_error([override])
    assert named in message and FORMS in message and "a path to an (N, 8) .npy" in message


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((5, 7), np.float32), "shape (5, 7); it must be (N, 8)"),
        (np.zeros(8, np.float32), "shape (8,); it must be (N, 8)"),
        (np.zeros((0, 8), np.float32), "shape (0, 8)"),
        (np.full((2, 8), np.inf, np.float32), "NaN or infinite"),
    ],
)
def test_bad_emotion_arrays(tmp_path, array, message):
    path = tmp_path / "emo.npy"
    np.save(path, array)
    error = config_error([f"control.emo={path}"])
    assert f"control.emo file {path}" in error and message in error


def test_emotion_names_match_the_constants():
    assert len(EMOTION_LABELS) == EMOTION_DIM
    assert all(f"{i} {name}" in FORMS for i, name in enumerate(EMOTION_LABELS))


# ---- overall_ctrl_info / ctrl_info -------------------------------------------------------------------------


def test_good_controls_validate():
    cfg = control(
        [
            "+control.overall_ctrl_info.delta_yaw=10",
            "+control.overall_ctrl_info.fade_out_keys=[exp,yaw]",
            "+control.ctrl_info.5.vad_alpha=0.5",
            f"+control.ctrl_info.6.delta_exp=[{','.join(['0.1'] * SOURCE_KP_DIM)}]",
        ]
    )
    assert FrameControls.from_mapping(cfg.overall_ctrl_info) == FrameControls(
        delta_yaw=10.0, fade_out_keys=("exp", "yaw")
    )
    assert set(cfg.ctrl_info) == {"5", "6"}


@pytest.mark.parametrize(
    ("override", "named"),
    [
        (
            "+control.overall_ctrl_info.delta_yawz=10",
            "control.overall_ctrl_info: unknown frame control(s) 'delta_yawz'",
        ),
        (
            "+control.overall_ctrl_info.delta_yaw=left",
            "control.overall_ctrl_info: frame control delta_yaw='left' is not a number",
        ),
        (
            "+control.overall_ctrl_info.delta_exp=[1,2]",
            "control.overall_ctrl_info: delta_exp needs 1 or 63 numbers, got 2",
        ),
        ("+control.overall_ctrl_info.fade_out_keys=[nose]", "'nose' is not a motion key"),
        ("+control.ctrl_info.3.blink=1", "control.ctrl_info, frame 3: unknown frame control(s) 'blink'"),
        (
            "+control.ctrl_info.3.vad_alpha=true",
            "control.ctrl_info, frame 3: frame control vad_alpha=True is not a number",
        ),
        (
            "+control.ctrl_info.first.vad_alpha=1",
            "control.ctrl_info: key 'first' is not a frame index (an integer >= 0)",
        ),
        ("+control.ctrl_info.3=0.5", "control.ctrl_info, frame 3: controls must be a mapping"),
    ],
)
def test_bad_controls_name_the_key(override, named):
    assert named in config_error([override])


def test_unknown_control_lists_every_frame_control():
    message = config_error(["+control.overall_ctrl_info.delta_yawz=10"])
    assert message.endswith("valid controls: " + ", ".join(FrameControls.names()))


def test_negative_frame_in_ctrl_info_is_rejected():
    cfg = compose("infer", [])
    cfg.control.ctrl_info = {"-1": {"delta_yaw": 1}}
    with pytest.raises(
        ConfigError, match=r"control.ctrl_info: key '-1' is not a frame index \(an integer >= 0\)"
    ):
        to_config(cfg)


# ---- ctrl_info_file ----------------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else _yaml(data))
    return path


def _yaml(data: object) -> str:
    import yaml

    return yaml.safe_dump(data)


@pytest.mark.parametrize("name", ["ctrl.yaml", "ctrl.json"])
def test_good_ctrl_info_file_validates_and_the_run_reads_the_same_controls(tmp_path, name):
    from ditto_research.pipeline.controls import build_frame_controls

    path = write(tmp_path, name, {0: {"delta_yaw": 5}, 2: {"vad_alpha": 0.0, "delta_exp": 0.01}})
    cfg = control([f"control.ctrl_info_file={path}", "+control.ctrl_info.1.delta_pitch=3"])
    frames = build_frame_controls(cfg, num_frames=4)
    assert frames == {
        0: FrameControls(delta_yaw=5.0),
        1: FrameControls(delta_pitch=3.0),
        2: FrameControls(vad_alpha=0.0, delta_exp=0.01),
    }


def test_ctrl_info_file_as_a_list_by_frame(tmp_path):
    from ditto_research.pipeline.controls import build_frame_controls

    path = write(tmp_path, "ctrl.yaml", [{}, {"alpha_yaw": 0.5}])
    frames = build_frame_controls(control([f"control.ctrl_info_file={path}"]), num_frames=2)
    assert frames[1] == FrameControls(alpha_yaw=0.5)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (
            {4: {"delta_yawz": 1}},
            "frame 4: unknown frame control(s) 'delta_yawz'; valid controls: fade_alpha",
        ),
        ({-2: {"delta_yaw": 1}}, "key -2 is not a frame index (an integer >= 0)"),
        ({7: {"delta_yaw": "10"}}, "frame 7: frame control delta_yaw='10' is not a number"),
        ({1.5: {"delta_yaw": 1}}, "key 1.5 is not a frame index"),
        ({0: [1, 2]}, "frame 0: controls must be a mapping"),
    ],
)
def test_bad_ctrl_info_file_names_the_file_the_frame_and_the_key(tmp_path, data, named):
    path = write(tmp_path, "ctrl.yaml", data)
    message = config_error([f"control.ctrl_info_file={path}"])
    assert message.startswith(f"control.ctrl_info_file {path}") and named in message


def test_missing_or_malformed_ctrl_info_file(tmp_path):
    assert "does not exist" in config_error([f"control.ctrl_info_file={tmp_path / 'nope.yaml'}"])
    bad = tmp_path / "bad.json"
    bad.write_text("{0: ")
    assert f"control.ctrl_info_file {bad} is not valid json" in config_error(
        [f"control.ctrl_info_file={bad}"]
    )
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    assert "must hold a mapping" in config_error([f"control.ctrl_info_file={scalar}"])


# ---- delta_eye_arr -----------------------------------------------------------------------------------------


def test_blink_array_file_is_checked(tmp_path):
    missing = tmp_path / "blink.npy"
    assert f"control.delta_eye_arr={missing} does not exist; give a (K, 63) .npy file" in config_error(
        [f"control.delta_eye_arr={missing}"]
    )
    np.save(missing, np.zeros((4, 21)))
    assert "shape (4, 21); it must be (K, 63)" in config_error([f"control.delta_eye_arr={missing}"])
    np.save(missing, np.zeros((4, SOURCE_KP_DIM), np.float32))
    assert control([f"control.delta_eye_arr={missing}"]).delta_eye_arr == str(missing)


# ---- files are read once, when the config validates -------------------------------------------------------


def test_the_config_keeps_what_it_read_and_reads_a_changed_value(tmp_path):
    """Validation keeps each file's content for the run (a file changed or removed afterwards does not
    change the run); assigning the field another file reads that one."""
    first = write(tmp_path, "first.yaml", {0: {"delta_yaw": 5}})
    np.save(tmp_path / "blink.npy", np.full((4, SOURCE_KP_DIM), 0.01, np.float32))
    cfg = control([f"control.ctrl_info_file={first}", f"control.delta_eye_arr={tmp_path / 'blink.npy'}"])
    first.unlink()
    (tmp_path / "blink.npy").unlink()
    assert cfg.file_frames() == {0: FrameControls(delta_yaw=5.0)}
    assert cfg.blink_array().shape == (4, SOURCE_KP_DIM) and not cfg.blink_array().flags.writeable
    cfg.file_frames()[7] = FrameControls()  # the caller's copy
    assert list(cfg.file_frames()) == [0]
    cfg.ctrl_info_file = str(write(tmp_path, "second.json", {"2": {"vad_alpha": 0.5}}))
    assert cfg.file_frames() == {2: FrameControls(vad_alpha=0.5)}
    cfg.emo = [3, 4]
    np.testing.assert_array_equal(cfg.emotion_rows(), parse_emotion([3, 4]))
