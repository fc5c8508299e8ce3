"""Batched rendering, paste-back on the device, compiled / graphed warp + decode, and their config checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ditto_research.config import compose, to_config
from ditto_research.errors import ConfigError
from ditto_research.examples import example_source, synthetic_speech
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.session import TalkingHeadSession

TINY = ["model=tiny", "face=mediapipe", "audio_encoder=untrained", "sampler.steps=2", "progress=false"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clip():
    engine = Engine.from_overrides(TINY)
    source = engine.register(example_source())
    yield engine, source, synthetic_speech(0.9)  # 23 frames: batches of 4 end with a partial one
    source.media.close()
    engine.close()


def _frames(engine: Engine, source, audio, *overrides: str) -> list[np.ndarray]:
    child = engine.derive(to_config(compose("infer", [*TINY, *overrides])))
    return [f.image for f in TalkingHeadSession(child).frames(source, audio)]


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_batched_rendering_gives_the_batch_one_frames(clip):
    """Batches of 4 (a partial last one) and larger than the clip give batch 1's frames bit for bit.

    With oneDNN's default kernels the tiny model's narrow 3-D convs (1 to 8 channels, depth 2) pick another
    kernel per batch size and move its warped features by ~4e-6 (one level at a few pixels, 99.996 % of the
    values identical); the full-size convs do not (the slow test below, default kernels). So this test turns
    oneDNN off for the run: PyTorch's own conv kernels are batch-invariant, and what is left to differ is the
    batching itself (grouping, order, the partial batch)."""
    engine, source, audio = clip
    audio = audio[: int(0.4 * 16000)]  # 10 frames: batches of 4 end with a partial one
    with torch.backends.mkldnn.flags(enabled=False):  # global, so the stage threads see it too
        one = _frames(engine, source, audio, "render.batch_size=1")
        for size in (4, 16):
            batched = _frames(engine, source, audio, f"render.batch_size={size}")
            assert len(batched) == len(one) == 10
            for a, b in zip(one, batched):
                np.testing.assert_array_equal(a, b, err_msg=f"render.batch_size={size}")


@pytest.mark.slow
def test_full_size_warp_and_decode_in_a_batch_equal_batch_one():
    from ditto_research.models import load_network

    warp, decoder = load_network("warp_network", seed=2), load_network("decoder", seed=3)
    gen = torch.Generator().manual_seed(0)
    volume = torch.randn((1, 32, 16, 64, 64), generator=gen)
    x_s = torch.rand((1, 21, 3), generator=gen) * 1.2 - 0.6
    x_d = [x_s + 0.02 * torch.randn((1, 21, 3), generator=gen) for _ in range(2)]
    with torch.no_grad():
        single = [decoder(warp(volume, x_s, x)) for x in x_d]
        batch = decoder(warp(volume.expand(2, 32, 16, 64, 64), torch.cat([x_s, x_s]), torch.cat(x_d)))
    for row, image in enumerate(single):
        assert torch.equal(batch[row : row + 1], image)


def test_paste_on_the_device_is_within_one_level_of_the_exact_paste(clip):
    """grid_sample instead of OpenCV's fixed-point bilinear kernel: measured max 1 level, 99.98 % of the
    values identical, the frame outside the crop untouched."""
    engine, source, audio = clip
    exact = _frames(engine, source, audio, "render.paste=exact")
    device = _frames(engine, source, audio, "render.paste=device", "render.batch_size=4")
    frame = source.media.frame(0)
    for a, b in zip(exact, device):
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.999
    outside = np.all(exact[0] == frame, axis=2)  # where the exact paste left the source untouched
    assert np.array_equal(device[0][outside], frame[outside])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["render.batch_size=0"], "render.batch_size=0 is not valid; give a number of frames >= 1"),
        (["render.paste=gpu"], "render.paste='gpu' is not valid; choose one of: auto, exact, device"),
        (["backend.cuda_graphs=true"], "backend.cuda_graphs=true needs backend.device=cuda"),
        (["backend=onnx", "backend.compile=true"], "backend.compile=true needs backend=pytorch"),
        (
            ["backend=onnx", "backend.lmdm_precision=bf16"],
            "backend.lmdm_precision=bf16 needs backend=pytorch",
        ),
    ],
)
def test_render_and_backend_options_are_checked_before_loading(overrides, message):
    with pytest.raises(ConfigError) as info:
        to_config(compose("infer", ["model=tiny", *overrides]))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_compile_without_a_compiler_is_one_line(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(ConfigError, match="backend.compile=true cannot work here: no C.. compiler found"):
        to_config(compose("infer", ["model=tiny", "backend.compile=true"]))


def test_bf16_on_a_gpu_without_bf16_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    with pytest.raises(ConfigError, match="Tesla T4 has no bfloat16 support; use backend.precision=fp16"):
        Engine.from_overrides(["model=tiny", "backend.device=cuda", "backend.precision=bf16"])


@pytest.mark.slow
def test_compiled_render_matches_eager_on_the_cpu(clip):
    """torch.compile (Inductor, C++ on the CPU) of warp + decode: the same frames to float rounding."""
    from ditto_research.config.schema import compiler_problem

    problem = compiler_problem("cpu")
    if problem:
        pytest.skip(f"torch.compile cannot run here: {problem}")
    engine, source, audio = clip
    eager = _frames(engine, source, audio, "render.batch_size=4")
    compiled_engine = Engine.from_overrides([*TINY, "backend.compile=true", "render.batch_size=4"])
    compiled = [f.image for f in TalkingHeadSession(compiled_engine).frames(source, audio)]
    assert len(compiled) == len(eager)
    for a, b in zip(eager, compiled):
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).max() <= 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_gpu_check_without_a_gpu_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "report"
    run = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a CUDA device" in lines[0] and "--device cpu --quick" in lines[0]
    assert not out.exists()


def test_gpu_check_runs_its_parts_in_children_and_writes_its_report(tmp_path):
    """The one-shot device check, as a CPU dry run of three parts (the full run needs a GPU)."""
    out = tmp_path / "check"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
         "--parts", "info,lmdm,tensorrt", "--minutes", "3", "--out", str(out)],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "gpu_check.json").read_text())
    assert [results[p]["status"] for p in ("info", "lmdm", "tensorrt")] == ["ok"] * 3
    assert results["info"]["result"]["device"] == "cpu"
    rows = results["lmdm"]["result"]["rows"]
    assert {(r["sampler"], r["steps"]) for r in rows} == {
        ("ddim", 50),
        ("ddim", 10),
        ("dpmpp_2m", 10),
        ("dpmpp_2m", 5),
    }
    assert all(r.get("ms_per_window", 0) > 0 for r in rows)
    markdown = (out / "gpu_check.md").read_text()
    assert "## lmdm (ok" in markdown and "| sampler | steps |" in markdown


def test_render_batch_memory_mode_reports_a_peak_per_batch_size():
    """``benchmarks/render_batch.py --memory``: one child per batch size; a bigger batch needs more memory."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "render_batch.py"), "--memory", "--tiny",
         "--batches", "1,4", "--threads", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [
        line.split("|")[1:-1]
        for line in proc.stdout.splitlines()
        if line.startswith("| ") and line[2].isdigit()
    ]
    added = {int(r[0]): float(r[3]) for r in rows}
    assert set(added) == {1, 4}
    assert 0 < added[1] < added[4]
