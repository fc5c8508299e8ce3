"""The CLI entry point: help lists the groups, bad input is one line + exit 2, typos name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ditto_research.checkpoints import DOWNLOAD_COMMAND


def infer(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ditto_research.infer", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_lists_groups_and_presets(tmp_path):
    proc = infer("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for line in (
        "model: ditto, tiny, untrained",
        "backend: onnx, pytorch, tensorrt",
        "sampler: ddim",
        "face: auto, given, mediapipe, official",
        "preset: fast, quality",
        "+preset=NAME",
    ):
        assert line in proc.stdout, line


def test_missing_checkpoints_is_one_clear_line(tmp_path):
    proc = infer(f"output={tmp_path / 'o.mp4'}", f"model.checkpoint_root={tmp_path / 'ckpt'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert DOWNLOAD_COMMAND in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_config_typo_names_the_key(tmp_path):
    proc = infer("sampler.stepz=3", cwd=tmp_path)
    assert proc.returncode != 0
    assert "stepz" in proc.stderr


def test_bad_value_is_a_config_error(tmp_path):
    proc = infer("model=tiny", "sampler.steps=0", cwd=tmp_path)
    assert proc.returncode == 2
    assert "sampler.steps=0" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_source_and_existing_output(tmp_path):
    proc = infer("model=tiny", f"source={tmp_path / 'nope.png'}", cwd=tmp_path)
    assert proc.returncode == 2 and "nope.png does not exist" in proc.stderr
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"keep me")
    proc = infer("model=tiny", f"output={out}", cwd=tmp_path)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert out.read_bytes() == b"keep me"


def test_output_may_not_be_an_input(tmp_path):
    audio = tmp_path / "speech.mp4"
    audio.write_bytes(b"x")
    proc = infer("model=tiny", f"audio={audio}", f"output={audio}", "overwrite=true", cwd=tmp_path)
    assert proc.returncode == 2 and "is the audio file" in proc.stderr
    assert audio.read_bytes() == b"x"


def test_online_mode_streams_the_file_into_the_offline_frame_count(tmp_path):
    """mode=online through the CLI, fed at 1x speed with the realtime preset: same MP4 shape as offline."""
    import math

    from ditto_research.audio.io import write_wav
    from ditto_research.examples import synthetic_speech
    from ditto_research.media.writer import probe_video

    audio = write_wav(tmp_path / "speech.wav", synthetic_speech(1.3))
    common = ("model=tiny", "audio_encoder=untrained", "face=mediapipe", "progress=false", f"audio={audio}")
    proc = infer(
        *common,
        "+preset=realtime",
        "sampler.steps=2",
        "mode.realtime=true",
        f"output={tmp_path / 'online.mp4'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "first frame" in proc.stdout and "busy ms per frame by stage" in proc.stdout
    frames, fps, width, height, audio_s = probe_video(tmp_path / "online.mp4")
    assert frames == math.ceil(1.3 * 25) and fps == 25.0 and audio_s is not None
    proc = infer(
        *common,
        "mode=online",
        "sampler=dpmpp_2m",
        "sampler.steps=2",
        f"output={tmp_path / 'fast.mp4'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "latency is measured with mode.realtime=true" in proc.stdout
    assert probe_video(tmp_path / "fast.mp4")[0] == frames


BUGGY_DECODER = """
import sys
from ditto_research.pipeline import stages

def process(self, item):
    raise RuntimeError("simulated decoder bug")
    yield

stages.DecodeStage.process = process
from ditto_research.infer import main
sys.argv = ["ditto_research.infer", *sys.argv[1:]]
main()
"""


def test_a_bug_inside_a_stage_keeps_its_traceback(tmp_path):
    """An unexpected exception in a stage is not a user error: full traceback, a line saying it is a bug,
    exit 1 (user errors are one line and exit 2, as above), and no output file."""
    out = tmp_path / "bug.mp4"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            BUGGY_DECODER,
            "model=tiny",
            "face=mediapipe",
            "progress=false",
            f"output={out}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback (most recent call last)" in proc.stderr
    assert "RuntimeError: simulated decoder bug" in proc.stderr
    assert "StageError: stage 'decode' failed" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: an unexpected failure")
    assert "this is a bug in ditto-research" in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".bug*"))


def test_given_landmarks_and_precomputed_features(tmp_path):
    """face=given + audio_encoder=precomputed from the command line; bad files are one line, exit 2."""
    import numpy as np

    from ditto_research.audio.io import write_wav
    from ditto_research.examples import example_source, synthetic_speech
    from tests.helpers import write_landmark_file

    landmarks = write_landmark_file(tmp_path / "face.npz", center=(256.0, 250.0), size=180.0)
    wav = write_wav(tmp_path / "speech.wav", synthetic_speech(0.5))  # 13 frames
    np.save(tmp_path / "feats.npy", np.zeros((13, 1024), np.float32))
    np.save(tmp_path / "short.npy", np.zeros((12, 1024), np.float32))
    common = ["model=tiny", "sampler.steps=2", f"source={example_source()}", f"audio={wav}", "face=given"]
    out = tmp_path / "out.mp4"
    ok = infer(
        *common,
        f"face.landmarks={landmarks}",
        "audio_encoder=precomputed",
        f"audio_encoder.path={tmp_path / 'feats.npy'}",
        f"output={out}",
        cwd=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert out.is_file()
    short = infer(
        *common,
        f"face.landmarks={landmarks}",
        "audio_encoder=precomputed",
        f"audio_encoder.path={tmp_path / 'short.npy'}",
        f"output={tmp_path / 'b.mp4'}",
        cwd=tmp_path,
    )
    assert short.returncode == 2 and short.stderr.strip().count("\n") == 0, short.stderr
    assert "has 12 feature rows but" in short.stderr and "expected (13, 1024)" in short.stderr
    np.savez(tmp_path / "bad.npz", lmk106=np.zeros((106, 2)))
    bad = infer(
        *common, f"face.landmarks={tmp_path / 'bad.npz'}", f"output={tmp_path / 'c.mp4'}", cwd=tmp_path
    )
    assert bad.returncode == 2 and "det_boxes is missing" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "b.mp4").exists() and not (tmp_path / "c.mp4").exists()
