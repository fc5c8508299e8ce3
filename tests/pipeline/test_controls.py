"""A run reads each file a config value names once: when the config validates (the run uses what was
checked, never a second read that could differ)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from ditto_research.audio.io import write_wav
from ditto_research.config import compose
from ditto_research.constants import EMOTION_DIM, MOTION_DIM, SOURCE_KP_DIM
from ditto_research.examples import synthetic_speech

TINY = ["model=tiny", "audio_encoder=untrained", "face=mediapipe", "sampler.steps=2", "progress=false"]


def test_a_whole_run_reads_each_named_file_once(tmp_path, monkeypatch):
    import ditto_research.motion.controls as controls
    from ditto_research.pipeline.run import run

    cv2.imwrite(str(tmp_path / "face.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    write_wav(tmp_path / "speech.wav", synthetic_speech(0.4))
    (tmp_path / "ctrl.yaml").write_text("0: {delta_yaw: 5}\n3: {vad_alpha: 0.5}\n")
    np.save(tmp_path / "emo.npy", np.full((3, EMOTION_DIM), 1 / EMOTION_DIM, np.float32))
    np.save(tmp_path / "blink.npy", np.full((4, SOURCE_KP_DIM), 0.01, np.float32))
    np.save(tmp_path / "range.npy", np.stack([np.full(MOTION_DIM, -1e3), np.full(MOTION_DIM, 1e3)]))

    reads: Counter[str] = Counter()
    read_ctrl, load = controls.read_ctrl_info_file, np.load

    def counting_read(path):
        reads[Path(path).name] += 1
        return read_ctrl(path)

    def counting_load(file, *args, **kwargs):
        reads[Path(file).name] += 1
        return load(file, *args, **kwargs)

    monkeypatch.setattr(controls, "read_ctrl_info_file", counting_read)
    monkeypatch.setattr(np, "load", counting_load)
    files = {
        "control.ctrl_info_file": "ctrl.yaml",
        "control.emo": "emo.npy",
        "control.delta_eye_arr": "blink.npy",
        "motion.v_min_max_for_clip": "range.npy",
    }
    cfg = compose(
        "infer",
        [
            *TINY,
            f"source={tmp_path / 'face.png'}",
            f"audio={tmp_path / 'speech.wav'}",
            f"output={tmp_path / 'out.mp4'}",
            *(f"{key}={tmp_path / name}" for key, name in files.items()),
        ],
    )
    assert run(cfg).is_file()
    assert {name: reads[name] for name in files.values()} == dict.fromkeys(files.values(), 1)
