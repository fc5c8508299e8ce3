"""``face=given``: the official chain's crop logic on recorded face-model answers from a file."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_research.config import compose, to_config
from ditto_research.errors import ConfigError, InputError
from ditto_research.face.crop import LANDMARKS_106, LANDMARKS_203, crop_image
from ditto_research.face.factory import make_frontend
from ditto_research.face.given import GivenFrontend
from ditto_research.face.landmark_file import GivenLandmarks
from tests.helpers import synthetic_landmarks, write_landmark_file


def _image(height: int = 480, width: int = 640) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_file_loads_image_and_video_layouts(tmp_path):
    image = GivenLandmarks.load(write_landmark_file(tmp_path / "one.npz"))
    assert (
        image.num_frames == 1 and image.lmk203.shape == (1, 203, 2) and image.lmk478.shape == (1, 1, 478, 3)
    )
    arrays = synthetic_landmarks(frames=4)
    arrays["lmk478"] = arrays["lmk478"][:, 0]  # (T, 478, 3) is accepted too
    arrays["det_boxes"] = arrays["det_boxes"][:, :4]  # no score column: score 1
    np.savez(tmp_path / "video.npz", **arrays)
    video = GivenLandmarks.load(tmp_path / "video.npz")
    assert video.num_frames == 4 and video.lmk478.shape == (4, 1, 478, 3)
    assert video.det_boxes.shape == (1, 5) and video.det_boxes[0, 4] == 1.0


def _broken(key: str, value) -> dict[str, np.ndarray]:
    arrays = synthetic_landmarks(frames=2)
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value(arrays[key]) if callable(value) else value
    return arrays


def _with_nan(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[3] = np.nan
    return a


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        (_broken("lmk203", None), "lmk203 is missing; expected an array 'lmk203' of shape (T, 203, 2)"),
        (
            _broken("lmk203", lambda a: a[:, :200]),
            "lmk203 has shape (2, 200, 2); expected (203, 2) or (T, 203, 2)",
        ),
        (_broken("lmk106", _with_nan), "lmk106 holds NaN or infinite values"),
        (_broken("lmk478", lambda a: a[:1]), "lmk478 covers 1 frames but lmk203 covers 2"),
        (_broken("det_boxes", np.zeros((0, 5), np.float32)), "det_boxes has shape (0, 5)"),
        (_broken("det_boxes", np.array([[10, 10, 5, 40, 1]], np.float32)), "x2 <= x1 or y2 <= y1"),
        (
            _broken("det_kps", np.zeros((3, 5, 2), np.float32)),
            "det_kps has shape (3, 5, 2); expected (1, 5, 2)",
        ),
        (_broken("lmk106", np.array(["a"] * 212).reshape(106, 2)), "lmk106 is a <U1 array"),
    ],
    ids=["missing", "shape", "nan", "frames", "no-box", "bad-box", "kps", "strings"],
)
def test_bad_files_are_one_line_naming_file_key_and_shape(tmp_path, arrays, expected):
    path = tmp_path / "lmk.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError) as info:
        GivenLandmarks.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and expected in message, message


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        GivenLandmarks.load(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="is not a readable .npz"):
        GivenLandmarks.load(tmp_path / "junk.npz")


def test_the_chain_crops_as_the_official_front_end_would(tmp_path):
    arrays = synthetic_landmarks(center=(300.0, 220.0), size=150.0)
    np.savez(tmp_path / "lmk.npz", **arrays)
    frontend = make_frontend("given", None, landmarks=tmp_path / "lmk.npz")
    assert isinstance(frontend, GivenFrontend)
    frontend.record_inputs = True
    rgb = _image()
    face = frontend.locate(rgb)
    # The 203 points are the file's; the 224 crop the "203 model" saw is placed by the 106 points.
    np.testing.assert_array_equal(face.points, arrays["lmk203"][0])
    assert face.groups == LANDMARKS_203 and face.num_faces == 1
    expected = crop_image(rgb, arrays["lmk106"], dsize=224, scale=1.5, vy_ratio=-0.1, landmarks=LANDMARKS_106)
    np.testing.assert_array_equal(frontend.inputs[0]["crop224"], expected.img_crop)
    np.testing.assert_array_equal(frontend.inputs[0]["crop224_M_c2o"], expected.M_c2o)
    np.testing.assert_array_equal(frontend.inputs[0]["box106"], arrays["det_boxes"][0, :4])
    crop = np.zeros((512, 512, 3), np.uint8)
    np.testing.assert_array_equal(frontend.landmarks478(crop), arrays["lmk478"][0])
    assert frontend.inputs[0]["crop512"].shape == (512, 512, 3)
    frontend.close()
    assert frontend.inputs == {}


def test_video_frames_are_tracked_from_the_previous_203_points(tmp_path):
    arrays = synthetic_landmarks(frames=3)
    frontend = GivenFrontend(GivenLandmarks.load(write_landmark_file(tmp_path / "v.npz", frames=3)))
    frontend.record_inputs = True
    rgb = _image()
    first = frontend.locate(rgb, index=0)
    second = frontend.locate(rgb, first, index=1)
    np.testing.assert_array_equal(second.points, arrays["lmk203"][1])
    tracked = crop_image(rgb, first.points, dsize=224, scale=1.5, vy_ratio=-0.1, landmarks=LANDMARKS_203)
    np.testing.assert_array_equal(frontend.inputs[1]["crop224"], tracked.img_crop)
    assert "box106" not in frontend.inputs[1]  # no detection on a tracked frame
    with pytest.raises(InputError) as info:
        frontend.locate(rgb, second, index=3, what="frame 3 of clip.mp4")
    assert "has landmarks for 3 source frame(s) but the source has more (frame 3 has none)" in str(info.value)


def test_largest_box_wins_and_small_faces_are_refused(tmp_path):
    arrays = synthetic_landmarks(center=(300.0, 220.0), size=150.0)
    small = np.array([[10, 10, 50, 60, 0.99]], np.float32)
    arrays["det_boxes"] = np.concatenate([small, arrays["det_boxes"]])
    np.savez(tmp_path / "two.npz", **arrays)
    frontend = GivenFrontend(tmp_path / "two.npz", record_inputs=True)
    face = frontend.locate(_image())
    assert face.num_faces == 2
    np.testing.assert_array_equal(frontend.inputs[0]["box106"], arrays["det_boxes"][1, :4])
    with pytest.raises(InputError, match="smaller than min_face_size=200"):
        GivenFrontend(tmp_path / "two.npz", min_face_size=200).locate(_image())


def test_config_needs_a_valid_file_and_only_for_given(tmp_path):
    good = write_landmark_file(tmp_path / "lmk.npz")
    cfg = to_config(compose("infer", ["model=tiny", "face=given", f"face.landmarks={good}"]))
    assert cfg.face.name == "given" and cfg.face.landmarks == good
    with pytest.raises(ConfigError, match="face=given needs face.landmarks=FILE.npz"):
        to_config(compose("infer", ["model=tiny", "face=given", "face.landmarks=null"]))
    with pytest.raises(ConfigError, match="face.landmarks is used by face=given only"):
        to_config(compose("infer", ["model=tiny", "face=mediapipe", f"face.landmarks={good}"]))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **_broken("lmk478", lambda a: a[:, :, :400]))
    with pytest.raises(ConfigError) as info:
        to_config(compose("infer", ["model=tiny", "face=given", f"face.landmarks={bad}"]))
    assert "lmk478 has shape (2, 1, 400, 3)" in str(info.value) and "\n" not in str(info.value)


def test_the_config_reads_the_file_once_and_the_front_end_gets_what_it_read(tmp_path):
    """face.landmarks is parsed when the config validates; the engine's front-end answers from that content
    (the file may be gone by then); assigning another file reads that one."""
    from ditto_research.pipeline.engine import Engine

    path = write_landmark_file(tmp_path / "lmk.npz")
    cfg = to_config(compose("infer", ["model=tiny", "face=given", f"face.landmarks={path}"]))
    read = cfg.face.given_landmarks()
    (tmp_path / "lmk.npz").unlink()
    assert cfg.face.given_landmarks() is read and not read.lmk203.flags.writeable
    engine = Engine(cfg)
    try:
        assert isinstance(engine.frontend, GivenFrontend) and engine.frontend.landmarks is read
    finally:
        engine.close()
    cfg.face.landmarks = write_landmark_file(tmp_path / "video.npz", frames=3)
    assert cfg.face.given_landmarks().num_frames == 3


def test_crop_vx_ratio_is_ignored_unless_asked(tmp_path):
    """The reference never applies crop_vx_ratio; face.apply_crop_vx_ratio=true does."""
    from ditto_research.face.frontend import crop_face

    frontend = GivenFrontend(write_landmark_file(tmp_path / "lmk.npz", center=(300.0, 220.0), size=150.0))
    rgb = _image()
    face = frontend.locate(rgb)
    plain = crop_face(rgb, face, vx_ratio=0.0)
    ignored = crop_face(rgb, face, vx_ratio=0.2)
    applied = crop_face(rgb, face, vx_ratio=0.2, honour_vx_ratio=True)
    np.testing.assert_array_equal(ignored.M_c2o, plain.M_c2o)
    assert not np.array_equal(applied.M_c2o, plain.M_c2o)
