"""backend=onnx runs the whole offline pipeline and matches backend=pytorch (model=tiny, exported on the fly)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ditto_research.examples import example_source, synthetic_speech
from ditto_research.pipeline import TalkingHeadSession

BASE = ["model=tiny", "audio_encoder=untrained", "face=mediapipe", "sampler.steps=2", "progress=false"]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    proc = subprocess.run([sys.executable, "-m", "export.onnx", "model=tiny", f"output_dir={out}"],
                          cwd=out, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_onnx_pipeline_matches_pytorch(onnx_dir):
    audio = synthetic_speech(0.6)
    results = {}
    for name, extra in (("pytorch", []), ("onnx", ["backend=onnx", f"backend.onnx_dir={onnx_dir}"])):
        session = TalkingHeadSession.from_overrides(BASE + extra)
        source = session.register(example_source())
        motion = session.generate_motion(audio, source)
        frames = np.stack([f.image for f in session.frames(source, audio)])
        results[name] = (motion, frames)
        session.close()
    (m_pt, f_pt), (m_ox, f_ox) = results["pytorch"], results["onnx"]
    assert m_pt.shape == m_ox.shape and f_pt.shape == f_ox.shape
    assert np.abs(m_pt - m_ox).max() <= 1e-3 * np.abs(m_pt).max()
    diff = np.abs(f_pt.astype(np.int16) - f_ox.astype(np.int16))
    assert diff.max() <= 2 and diff.mean() < 0.05
