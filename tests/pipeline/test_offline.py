"""Offline generation end to end with model=tiny: frame count, resolution, audio, bad inputs, failures."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from ditto_research.audio.io import write_wav
from ditto_research.errors import ConfigError, InputError, StageError
from ditto_research.examples import synthetic_speech
from ditto_research.media.writer import VideoWriter, probe_video
from ditto_research.pipeline import TalkingHeadSession
from ditto_research.pipeline.run import check_inputs

OVERRIDES = ["model=tiny", "audio_encoder=untrained", "face=mediapipe", "sampler.steps=2", "progress=false"]


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def session() -> TalkingHeadSession:
    s = TalkingHeadSession.from_overrides(OVERRIDES)
    yield s
    s.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    face = data.astronaut()
    return {
        "face": write_rgb(d / "face.png", face),
        "odd": write_rgb(d / "odd.png", cv2.resize(face, (301, 257))),
        "camera": write_rgb(d / "camera.png", np.repeat(data.camera()[..., None], 3, axis=2)),
        "tiny_face": write_rgb(
            d / "tiny.png", np.pad(cv2.resize(face, (128, 128)), ((100, 100), (100, 100), (0, 0)))
        ),
        "speech": write_wav(d / "speech.wav", synthetic_speech(0.9)),
        "silence": write_wav(d / "silence.wav", np.zeros(12000, np.float32)),
        "empty": write_wav(d / "empty.wav", np.zeros(0, np.float32)),
        "text": _text(d / "notes.wav"),
        "corrupt": _corrupt_png(d / "broken.png"),
    }


def _text(path: Path) -> Path:
    path.write_text("this is not audio\n")
    return path


def _corrupt_png(path: Path) -> Path:
    ok, buf = cv2.imencode(".png", data.astronaut())
    path.write_bytes(buf.tobytes()[:200])
    return path


def test_image_to_video_frames_resolution_and_audio(session, media, tmp_path):
    out = tmp_path / "out.mp4"
    result = session.generate(media["odd"], media["speech"], out)
    frames, fps, width, height, audio_s = probe_video(out)
    assert frames == math.ceil(0.9 * 25) == result.frames
    assert fps == 25.0
    assert (width, height) == (300, 256)  # odd source dims made even, as the reference does
    assert audio_s is not None and abs(audio_s - 0.9) <= 0.04
    assert set(result.stage_ms_per_frame) == {"motion", "stitch", "warp", "decode", "paste"}


def test_silence_is_valid_and_renders_an_idle_face(session, media, tmp_path):
    out = tmp_path / "idle.mp4"
    result = session.generate(media["face"], media["silence"], out)
    assert out.is_file() and result.frames == math.ceil(12000 / 16000 * 25)


@pytest.mark.parametrize(
    ("source", "audio", "message"),
    [
        ("face", "empty", "no audio samples|empty"),
        ("face", "text", "notes.wav"),
        ("corrupt", "speech", "broken.png"),
        ("camera", "speech", "the face in camera.png is turned to the side"),
        ("tiny_face", "speech", "no face found in tiny.png|smaller than min_face_size"),
        ("text", "speech", "notes.wav"),
    ],
)
def test_bad_inputs_are_input_errors_and_leave_no_output(session, media, tmp_path, source, audio, message):
    out = tmp_path / "bad.mp4"
    with pytest.raises(InputError, match=message):
        session.generate(media[source], media[audio], out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".mp4" or p.name.startswith(".")]


def test_face_smaller_than_min_face_size(media, tmp_path):
    s = TalkingHeadSession.from_overrides(OVERRIDES + ["face.min_face_size=160"])
    with pytest.raises(InputError, match=r"face.png is \d+x\d+ pixels, smaller than min_face_size=160"):
        s.register(media["face"])
    s.close()


def test_several_faces_use_the_largest(session, tmp_path, caplog):
    from tests.face.test_frontend import _head

    head = _head()
    small = cv2.resize(head, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((head.shape[0], small.shape[1] + head.shape[1], 3), dtype=np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    canvas[:, small.shape[1] :] = head
    path = write_rgb(tmp_path / "two.png", canvas)
    with caplog.at_level(logging.WARNING):
        source = session.register(path)
    assert source.faces_seen == 2
    assert "2 faces found in two.png; using the largest" in caplog.text
    m = source.frames[0].M_c2o  # the crop centre lies on the larger (right) face
    centre = m[:2, :2] @ np.array([256.0, 256.0]) + m[:2, 2]
    assert centre[0] > small.shape[1]


def test_video_source_keeps_appearance_bounded(session, media, tmp_path):
    face = data.astronaut()
    video = tmp_path / "src.mp4"
    with VideoWriter(video, fps=25) as w:
        for i in range(12):
            w.write(np.roll(face, 2 * i, axis=1))
        w.close()
    source = session.register(video)
    assert len(source) == 12 and not source.is_image
    out = tmp_path / "from_video.mp4"
    result = session.generate(video, media["speech"], out)
    assert result.frames == math.ceil(0.9 * 25)
    assert probe_video(out)[0] == result.frames


def test_stage_failure_stops_cleanly_with_the_stage_name(media, tmp_path):
    s = TalkingHeadSession.from_overrides(OVERRIDES)

    def explode(*args, **kwargs):
        raise RuntimeError("decoder blew up")

    s.networks.decoder.module.forward = explode
    out = tmp_path / "fail.mp4"
    with pytest.raises(StageError) as info:
        s.generate(media["face"], media["speech"], out)
    assert info.value.stage == "decode" and "decoder blew up" in str(info.value)
    assert not out.exists()
    assert not any(t.name.startswith("stage-") for t in threading.enumerate())
    s.close()


def test_per_frame_controls_file_and_unknown_control(media, tmp_path, caplog):
    """The controls file is read once, when the config validates: a session runs what was checked, an edit
    of the file reaches configs validated after it, and a bad file fails validation before any work."""
    from ditto_research.config import compose, to_config
    from ditto_research.pipeline.controls import build_frame_controls

    def validated(path: Path):
        extra = [f"control.ctrl_info_file={path}", "control.fade_in=3", "control.fade_type=s"]
        return to_config(compose("infer", OVERRIDES + extra))

    ctrl = tmp_path / "ctrl.yaml"
    ctrl.write_text("0: {delta_yaw: 10}\n5: {delta_pitch: -5, vad_alpha: 0.5}\n")
    s = TalkingHeadSession(validated(ctrl))
    out = tmp_path / "ctrl.mp4"
    assert s.generate(media["face"], media["speech"], out).frames == 23
    ctrl.write_text("0: {delta_yaw: 10}\n40: {delta_pitch: 3}\n")  # the clip has 23 frames
    assert 40 not in build_frame_controls(s.cfg.control, 23)  # this session keeps the file it validated
    late = TalkingHeadSession(s.engine.derive(validated(ctrl)))
    with caplog.at_level("WARNING"):
        late.generate(media["face"], media["speech"], tmp_path / "late.mp4")
    assert "per-frame controls for frame(s) 40 are past the clip's last frame 22" in caplog.text
    ctrl.write_text("0: {delta_yaww: 10}\n")
    with pytest.raises(ConfigError, match="unknown frame control"):
        TalkingHeadSession(s.engine.derive(validated(ctrl))).generate(
            media["face"], media["speech"], tmp_path / "ctrl2.mp4"
        )
    assert not (tmp_path / "ctrl2.mp4").exists()
    s.close()


def test_output_folder_checks(tmp_path):
    from ditto_research.config import compose, to_config

    cfg = to_config(compose("infer", OVERRIDES + [f"output={tmp_path}/missing/out.mp4"]))
    with pytest.raises(ConfigError, match="does not exist"):
        check_inputs(cfg)
    cfg = to_config(compose("infer", OVERRIDES + ["output=/proc/out.mp4"]))
    with pytest.raises(ConfigError, match="not writable"):
        check_inputs(cfg)
    cfg = to_config(compose("infer", OVERRIDES + [f"output={tmp_path}/out.avi"]))
    with pytest.raises(ConfigError, match=".mp4"):
        check_inputs(cfg)


@pytest.mark.slow
def test_full_size_untrained_cli_end_to_end(media, tmp_path):
    """Every full-size network in the real pipeline, through the CLI (about a minute on 2 cores)."""
    import subprocess
    import sys

    audio = write_wav(tmp_path / "short.wav", synthetic_speech(0.2))
    out = tmp_path / "full.mp4"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ditto_research.infer",
            "model=untrained",
            f"source={media['face']}",
            f"audio={audio}",
            f"output={out}",
            "face=mediapipe",
            "progress=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames, fps, width, height, audio_s = probe_video(out)
    assert (frames, fps, width, height) == (5, 25.0, 512, 512)
    assert "done: 5 frames" in proc.stdout
