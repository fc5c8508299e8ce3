"""backend=onnx: runs our exports like the torch modules, checks files at load, refuses unavailable
devices."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from ditto_research.backends import RENDER_NETWORKS, example_inputs, get_io, make_backend
from ditto_research.backends.onnx import OnnxLmdm, load_onnx_network
from ditto_research.errors import CheckpointError, ConfigError
from tests.helpers import max_rel_err


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


@pytest.mark.parametrize("name", RENDER_NETWORKS)
def test_onnx_runner_matches_pytorch_runner(tiny_onnx, name):
    folder = tiny_onnx([name])
    torch_runner = make_backend("pytorch", model_name="tiny").load(name)
    onnx_runner = make_backend("onnx", onnx_dir=folder, model_name="tiny").load(name)
    inputs = example_inputs(name, torch_runner.module, seed=11)
    ours, ref = _as_tuple(onnx_runner(*inputs)), _as_tuple(torch_runner(*inputs))
    assert len(ours) == len(ref) == len(get_io(name).outputs)
    for a, b in zip(ours, ref):
        assert isinstance(a, torch.Tensor) and a.dtype == torch.float32
        assert max_rel_err(a, b.numpy()) < 1e-4
    # numpy in -> numpy out, same values
    as_numpy = _as_tuple(onnx_runner(*[x.numpy() for x in inputs]))
    assert all(isinstance(a, np.ndarray) for a in as_numpy)
    np.testing.assert_array_equal(as_numpy[0], ours[0].numpy())


def _rename_input(src, dst, old: str, new: str) -> None:
    model = onnx.load(str(src))
    for value in model.graph.input:
        if value.name == old:
            value.name = new
    for node in model.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    onnx.save(model, str(dst))


def test_wrong_io_names_are_a_checkpoint_error_with_the_remedy(tiny_onnx, tmp_path):
    folder = tiny_onnx(["stitch_network"])
    _rename_input(folder / "stitch_network.onnx", tmp_path / "stitch_network.onnx", "kp_driving", "kp_drv")
    with pytest.raises(CheckpointError) as info:
        load_onnx_network("stitch_network", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "stitch_network.onnx") in message
    assert "kp_drv" in message and "kp_driving" in message
    assert "python -m ditto_research.export.onnx" in message and "networks=[stitch_network]" in message


def test_wrong_rank_is_a_checkpoint_error(tiny_onnx, tmp_path):
    folder = tiny_onnx(["decoder"])
    shutil.copy(folder / "decoder.onnx", tmp_path / "appearance_extractor.onnx")  # image in, 4-D out: wrong
    with pytest.raises(CheckpointError, match="appearance_extractor interface"):
        load_onnx_network("appearance_extractor", tmp_path)


def test_missing_file_and_folder_name_the_export_command(tmp_path):
    with pytest.raises(
        CheckpointError, match=r"decoder.onnx for decoder is missing.*python -m ditto_research.export.onnx"
    ):
        load_onnx_network("decoder", tmp_path)
    with pytest.raises(
        CheckpointError, match=r"does not exist.*python -m ditto_research.export.onnx model=untrained"
    ):
        make_backend("onnx", onnx_dir=tmp_path / "absent", model_name="untrained")
    (tmp_path / "lmdm_v0.4_hubert.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        load_onnx_network("lmdm", tmp_path)


def test_cuda_without_the_cuda_provider_is_a_config_error(tiny_onnx):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(ConfigError, match="CUDAExecutionProvider|onnxruntime-gpu"):
        make_backend("onnx", device="cuda", onnx_dir=tiny_onnx(["stitch_network"]))
    with pytest.raises(ConfigError, match="onnxruntime-gpu"):
        load_onnx_network("stitch_network", tiny_onnx(["stitch_network"]), device="cuda")


@pytest.mark.parametrize("name, precision", [("onnx", "bf16"), ("tensorrt", "bf16"), ("tflite", "fp32")])
def test_bad_backend_or_precision(name, precision, tmp_path):
    with pytest.raises(ConfigError):
        make_backend(name, precision=precision, onnx_dir=tmp_path)


def test_precision_must_match_the_files(tiny_onnx):
    fp32 = tiny_onnx(["decoder", "lmdm"])
    with pytest.raises(ConfigError, match="precision=fp16"):
        load_onnx_network("decoder", fp32, precision="fp16")
    assert load_onnx_network("lmdm", fp32, precision="fp16").precision == "fp32"  # LMDM is fp32 in both
    fp16 = tiny_onnx(["decoder"], ["precision=fp16"])
    with pytest.raises(ConfigError, match="is an fp16 model"):
        load_onnx_network("decoder", fp16, precision="fp32")
    runner = load_onnx_network("decoder", fp16, precision="fp16")
    torch_runner = make_backend("pytorch", model_name="tiny").load("decoder")
    x = example_inputs("decoder", torch_runner.module)
    assert max_rel_err(runner(*x), torch_runner(*x).numpy()) < 5e-2


def test_official_plugin_warp_file_runs_unchanged(tiny_onnx, tmp_path):
    """The official warp_network.onnx calls the TensorRT plugin op GridSample3D; it is rewritten in memory."""
    model = onnx.load(str(tiny_onnx(["warp_network"]) / "warp_network.onnx"))
    del model.metadata_props[:]  # the official files carry no ditto.* metadata
    for node in model.graph.node:
        if node.op_type == "GridSample":
            node.op_type = "GridSample3D"
            del node.attribute[:]
            node.attribute.extend(
                helper.make_attribute(k, 0) for k in ("interpolation_mode", "padding_mode", "align_corners")
            )
    onnx.save(model, str(tmp_path / "warp_network.onnx"))
    before = (tmp_path / "warp_network.onnx").read_bytes()
    runner = load_onnx_network("warp_network", tmp_path)
    assert runner.rewritten == 2 and (tmp_path / "warp_network.onnx").read_bytes() == before
    torch_runner = make_backend("pytorch", model_name="tiny").load("warp_network")
    inputs = example_inputs("warp_network", torch_runner.module, seed=5)
    assert max_rel_err(runner(*inputs), torch_runner(*inputs).numpy()) < 1e-4


def test_lmdm_runner_sampler_interface(tiny_onnx):
    lmdm = load_onnx_network("lmdm", tiny_onnx(["lmdm"]))
    assert isinstance(lmdm, OnnxLmdm)
    torch_lmdm = make_backend("pytorch", model_name="tiny").load("lmdm")
    assert (lmdm.seq_frames, lmdm.motion_dim, lmdm.cond_dim) == (
        torch_lmdm.seq_frames,
        torch_lmdm.motion_dim,
        torch_lmdm.cond_dim,
    )
    assert torch.equal(lmdm.alphas_cumprod, torch_lmdm.alphas_cumprod)
    lmdm.guidance_weight = 2.0  # the baked weight: accepted
    with pytest.raises(ConfigError, match="guidance weight 2 baked in"):
        lmdm.guidance_weight = 1.5
    x, cond_frame, cond, _ = example_inputs("lmdm", torch_lmdm.module, seed=4)
    t = torch.tensor([500])
    ours, ref = lmdm(x, cond_frame, cond, t), torch_lmdm(x, cond_frame, cond, t)
    for a, b in zip(ours, ref):
        assert max_rel_err(a, b.numpy()) < 1e-4
    denoised = lmdm.guided_denoiser(cond_frame, cond)(x, t)
    assert max_rel_err(denoised, ref[1].numpy()) < 1e-4
    noise = lmdm.predict_noise_from_start(x, t, denoised)
    assert max_rel_err(noise, ref[0].numpy()) < 1e-4
    with pytest.raises(ConfigError, match="integer diffusion times"):
        lmdm.guided_denoiser(cond_frame, cond, times=torch.tensor([999.0, 412.5]))


def test_backend_from_the_composed_infer_config(tiny_onnx):
    from ditto_research.backends import make_backend_from_config
    from ditto_research.config import compose, to_config

    folder = tiny_onnx(["stitch_network"])
    cfg = to_config(
        compose(
            "infer", ["model=tiny", "backend=onnx", f"backend.onnx_dir={folder}", "backend.num_threads=1"]
        )
    )
    backend = make_backend_from_config(cfg.backend, cfg.model, cfg.motion)
    assert backend.name == "onnx" and str(folder) in backend.source
    runner = backend.load("stitch_network")
    assert runner.session.get_providers() == ["CPUExecutionProvider"]
    kp = np.zeros((1, 21, 3), dtype=np.float32)
    assert runner(kp, kp).shape == (1, 21, 3)
