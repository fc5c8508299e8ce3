"""backend=tensorrt: engine naming and mismatch detection (pure), and the engine runtime (marked trt)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from ditto_research.backends import make_backend
from ditto_research.backends.tensorrt import (
    EngineTag,
    check_engine_tag,
    engine_file_name,
    find_engine,
    gpu_slug,
    import_tensorrt,
    parse_engine_file_name,
    read_sidecar,
    sidecar_path,
)
from ditto_research.errors import CheckpointError, ConfigError

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
H100 = "NVIDIA H100 80GB HBM3"


def test_gpu_slug():
    assert gpu_slug(H100) == "NVIDIA-H100-80GB-HBM3"
    assert gpu_slug("NVIDIA GeForce RTX 4090 (laptop)") == "NVIDIA-GeForce-RTX-4090-laptop"
    assert gpu_slug("  ") == "unknown-GPU"


@pytest.mark.parametrize("stem", ["decoder", "lmdm_v0.4_hubert", "warp_network", "motion_extractor"])
@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_engine_name_round_trip(stem, precision):
    name = engine_file_name(stem, precision, H100, "10.7.0")
    assert name.endswith(".engine") and "NVIDIA-H100-80GB-HBM3" in name and "trt10.7.0" in name
    assert parse_engine_file_name(name) == EngineTag(stem, precision, "NVIDIA-H100-80GB-HBM3", "10.7.0")


@pytest.mark.parametrize(
    "name", ["decoder_fp16.engine", "lmdm_v0.4_hubert_fp32.engine", "decoder.onnx", "x.trt10.engine"]
)
def test_official_and_foreign_names_have_no_tag(name):
    assert parse_engine_file_name(name) is None


def test_check_engine_tag_accepts_this_machine():
    path = Path("/e") / engine_file_name("decoder", "fp16", H100, "10.7.0")
    assert check_engine_tag(path, H100, "10.7.0").stem == "decoder"


@pytest.mark.parametrize(
    "gpu, version, match",
    [
        ("NVIDIA A10G", "10.7.0", r"built for NVIDIA-H100-80GB-HBM3 .* this machine has NVIDIA-A10G"),
        (H100, "10.8.0", r"TensorRT 10.7.0, but this machine has .* TensorRT 10.8.0"),
    ],
)
def test_check_engine_tag_reports_a_mismatch_with_the_remedy(gpu, version, match):
    path = Path("/engines") / engine_file_name("decoder", "fp16", H100, "10.7.0")
    with pytest.raises(CheckpointError, match=match) as info:
        check_engine_tag(path, gpu, version, onnx_dir="ckpt/ditto_onnx")
    assert "python -m ditto_research.export.tensorrt onnx_dir=ckpt/ditto_onnx engine_dir=/engines" in str(
        info.value
    )


def test_check_engine_tag_refuses_the_official_untagged_engines():
    with pytest.raises(CheckpointError, match="no GPU/TensorRT tag .* TensorRT 8.6"):
        check_engine_tag(Path("ditto_trt_Ampere_Plus/decoder_fp16.engine"), H100, "10.7.0")


def test_find_engine(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        find_engine(tmp_path / "none", "decoder", "fp16", H100, "10.7.0")
    with pytest.raises(CheckpointError, match=r"no fp16 engine for decoder .* found: none"):
        find_engine(tmp_path, "decoder", "fp16", H100, "10.7.0")
    (tmp_path / "decoder_fp16.engine").write_bytes(b"official")
    with pytest.raises(CheckpointError, match="no GPU/TensorRT tag"):
        find_engine(tmp_path, "decoder", "fp16", H100, "10.7.0")
    other = tmp_path / engine_file_name("decoder", "fp16", "NVIDIA L4", "10.7.0")
    other.write_bytes(b"x")
    (tmp_path / "decoder_fp16.engine").unlink()
    with pytest.raises(CheckpointError, match="built for NVIDIA-L4"):
        find_engine(tmp_path, "decoder", "fp16", H100, "10.7.0")
    mine = tmp_path / engine_file_name("decoder", "fp16", H100, "10.7.0")
    mine.write_bytes(b"x")
    assert find_engine(tmp_path, "decoder", "fp16", H100, "10.7.0") == mine
    # fp32-only networks are looked up as fp32 whatever the requested precision
    lmdm = tmp_path / engine_file_name("lmdm_v0.4_hubert", "fp32", H100, "10.7.0")
    lmdm.write_bytes(b"x")
    assert find_engine(tmp_path, "lmdm", "fp16", H100, "10.7.0") == lmdm


def test_find_lmdm_pair_engines(tmp_path):
    from ditto_research.backends.tensorrt import find_lmdm_pair_engines

    assert find_lmdm_pair_engines(tmp_path, H100, "10.7.0") is None  # the official LMDM engine is used then
    memory = tmp_path / engine_file_name("lmdm_v0.4_hubert_memory", "fp32", H100, "10.7.0")
    step = tmp_path / engine_file_name("lmdm_v0.4_hubert_step", "fp32", H100, "10.7.0")
    memory.write_bytes(b"x")
    with pytest.raises(
        CheckpointError,
        match=r"lmdm_v0.4_hubert_step_fp32\..*missing.*python -m ditto_research.export.tensorrt",
    ):
        find_lmdm_pair_engines(tmp_path, H100, "10.7.0")
    step.write_bytes(b"x")
    assert find_lmdm_pair_engines(tmp_path, H100, "10.7.0") == (memory, step)
    assert (
        find_lmdm_pair_engines(tmp_path, "NVIDIA L4", "10.7.0") is None
    )  # other machines' engines: not these
    assert find_engine(tmp_path, "lmdm_step", "fp16", H100, "10.7.0") == step  # pair graphs are fp32 engines


def test_sidecar(tmp_path):
    engine = tmp_path / "decoder_fp16.X.trt10.0.engine"
    assert read_sidecar(engine) == {}
    sidecar_path(engine).write_text('{"metadata": {"guidance_weight": "2.5"}}')
    assert read_sidecar(engine) == {"guidance_weight": "2.5"}
    sidecar_path(engine).write_text("{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_sidecar(engine)


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_missing_tensorrt_is_a_config_error():
    with pytest.raises(ConfigError, match="unavailable on this machine"):
        import_tensorrt()
    with pytest.raises(ConfigError, match="backend=tensorrt is unavailable"):
        make_backend("tensorrt", device="cuda")


@pytest.mark.trt
@pytest.mark.gpu
def test_tensorrt_engine_matches_pytorch(tiny_onnx, tmp_path):
    """Builds fp32 engines of two tiny networks and compares them with torch (needs a GPU and TensorRT)."""
    import torch

    from ditto_research.backends import example_inputs
    from ditto_research.export.config import TensorRTExportConfig
    from ditto_research.export.tensorrt import run_build
    from tests.helpers import max_rel_err

    folder = tiny_onnx(["stitch_network", "warp_network"])
    run_build(
        TensorRTExportConfig(
            onnx_dir=str(folder), engine_dir=str(tmp_path), precision="fp32", builder_optimization_level=0
        ),
        log=lambda _: None,
    )
    trt_backend = make_backend("tensorrt", device="cuda", precision="fp32", engine_dir=tmp_path)
    torch_backend = make_backend("pytorch", model_name="tiny")
    for name in ("stitch_network", "warp_network"):
        reference = torch_backend.load(name)
        inputs = example_inputs(name, reference.module)
        out = trt_backend.load(name)(*[x.cuda() for x in inputs])
        assert out.device.type == "cuda"
        assert max_rel_err(out.cpu(), reference(*inputs).numpy()) < 1e-3
    del torch


@pytest.mark.trt
@pytest.mark.gpu
def test_tensorrt_lmdm_pair_matches_pytorch(tiny_onnx, tmp_path):
    """Engines of the cached LMDM pair: the backend loads them as the LMDM, and a dpmpp_2m window matches
    torch."""
    import torch

    from ditto_research.backends.lmdm_pair import CachedPairLmdm
    from ditto_research.config.schema import SamplerConfig
    from ditto_research.diffusion.noise import make_noise
    from ditto_research.export.config import TensorRTExportConfig
    from ditto_research.export.tensorrt import run_build
    from ditto_research.pipeline.networks import build_window_sampler
    from tests.helpers import max_rel_err

    folder = tiny_onnx(["lmdm"], ["lmdm_form=cached"])
    run_build(
        TensorRTExportConfig(
            onnx_dir=str(folder), engine_dir=str(tmp_path), precision="fp32", builder_optimization_level=0
        ),
        log=lambda _: None,
    )
    lmdm = make_backend("tensorrt", device="cuda", precision="fp32", engine_dir=tmp_path).load("lmdm")
    assert isinstance(lmdm, CachedPairLmdm)
    torch_lmdm = make_backend("pytorch", model_name="tiny").load("lmdm")
    gen = torch.Generator().manual_seed(0)
    kp_cond = torch.randn((1, lmdm.motion_dim), generator=gen)
    cond = torch.randn((1, lmdm.seq_frames, lmdm.cond_dim), generator=gen)
    config = SamplerConfig(name="dpmpp_2m", steps=5)
    ours = build_window_sampler(lmdm, config, make_noise("torch", 1))(kp_cond, cond)
    ref = build_window_sampler(torch_lmdm, config, make_noise("torch", 1))(kp_cond, cond)
    assert max_rel_err(ours.cpu(), ref.numpy()) < 1e-3
