"""The CLI entry point: help lists the groups, bad input is one line + exit 2, typos name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ditto_research.checkpoints import DOWNLOAD_COMMAND


def infer(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ditto_research.infer", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_help_lists_groups_and_presets(tmp_path):
    proc = infer("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for line in ("model: ditto, tiny, untrained", "backend: onnx, pytorch, tensorrt", "sampler: ddim",
                 "face: auto, mediapipe, official", "preset: fast, quality", "+preset=NAME"):
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
