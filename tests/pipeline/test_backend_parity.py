"""backend=onnx runs the whole offline pipeline and matches backend=pytorch (model=tiny, exported on the fly).

With the official LMDM file (reference DDIM, one guided step per evaluation) and with the cached LMDM pair
(lmdm_form=cached: here DPM-Solver++ 2M and a guidance scale the official file could not take).
"""

from __future__ import annotations

import shutil
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
    proc = subprocess.run(
        [sys.executable, "-m", "ditto_research.export.onnx", "model=tiny", f"output_dir={out}"],
        check=False,
        cwd=out,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def pair_onnx_dir(onnx_dir, tmp_path_factory):
    """The same exports, with the LMDM as its cached pair instead of the official guided step."""
    from ditto_research.export.onnx import run_export
    from tests.export.tiny_exports import export_config

    out = tmp_path_factory.mktemp("onnx_pair")
    for path in onnx_dir.glob("*.onnx"):
        if not path.name.startswith("lmdm"):
            shutil.copy(path, out)
    run_export(export_config(out, ["networks=[lmdm]", "lmdm_form=cached"]), log=lambda _: None)
    return out


def test_onnx_pipeline_matches_pytorch(onnx_dir):
    _check_pipeline_parity(onnx_dir, [])


def test_onnx_pipeline_on_the_cached_lmdm_pair_matches_pytorch(pair_onnx_dir):
    assert not (pair_onnx_dir / "lmdm_v0.4_hubert.onnx").exists()
    # The pair changes the motion only; the renderer's parity is the test above's.
    _check_pipeline_parity(pair_onnx_dir, ["sampler=dpmpp_2m", "sampler.guidance_scale=1.5"], render=False)


def _check_pipeline_parity(folder, overrides: list[str], render: bool = True) -> None:
    audio = synthetic_speech(0.6)
    results = {}
    for name, extra in (("pytorch", []), ("onnx", ["backend=onnx", f"backend.onnx_dir={folder}"])):
        session = TalkingHeadSession.from_overrides(BASE + overrides + extra)
        source = session.register(example_source())
        motion = session.generate_motion(audio, source)
        frames = np.stack([f.image for f in session.frames(source, audio)]) if render else np.zeros(0)
        results[name] = (motion, frames)
        session.close()
    (m_pt, f_pt), (m_ox, f_ox) = results["pytorch"], results["onnx"]
    assert m_pt.shape == m_ox.shape and f_pt.shape == f_ox.shape
    assert np.abs(m_pt - m_ox).max() <= 1e-3 * np.abs(m_pt).max()
    if render:
        diff = np.abs(f_pt.astype(np.int16) - f_ox.astype(np.int16))
        assert diff.max() <= 2 and diff.mean() < 0.05
