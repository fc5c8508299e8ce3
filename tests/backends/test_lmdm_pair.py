"""The cached LMDM pair at run time: the ONNX backend loads it, and every sampler runs over it (model=tiny).

Stated tolerance: a denoising step within 1e-4 of max |torch| (measured ~1e-6); a whole window (two windows,
5 steps) of ddim and dpmpp_2m within 1e-4 of max |motion| (measured ~1e-6).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ditto_research.backends import make_backend
from ditto_research.backends.base import LMDM_PAIR_IO
from ditto_research.backends.lmdm_pair import CachedPairLmdm, CachedStepGraph, ConditionMemoryGraph
from ditto_research.backends.onnx import OnnxLmdm, load_onnx_network
from ditto_research.config.schema import SamplerConfig
from ditto_research.diffusion.noise import make_noise
from ditto_research.errors import CheckpointError, ConfigError, InputError
from ditto_research.pipeline.networks import build_window_sampler
from tests.helpers import max_rel_err

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def pair_dir(tiny_onnx):
    return tiny_onnx(["lmdm"], ["lmdm_form=both"])


@pytest.fixture(scope="module")
def torch_lmdm():
    return make_backend("pytorch", model_name="tiny").load("lmdm")


def _window_inputs(lmdm, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    kp_cond = torch.randn((1, lmdm.motion_dim), generator=gen)
    cond = torch.randn((1, lmdm.seq_frames, lmdm.cond_dim), generator=gen)
    return kp_cond, cond, torch.randn((1, lmdm.seq_frames, lmdm.motion_dim), generator=gen)


def test_the_pair_is_preferred_over_the_official_step(pair_dir, torch_lmdm):
    lmdm = load_onnx_network("lmdm", pair_dir)
    assert isinstance(lmdm, CachedPairLmdm) and lmdm.name == "lmdm"
    assert (lmdm.seq_frames, lmdm.motion_dim, lmdm.cond_dim) == (
        torch_lmdm.seq_frames,
        torch_lmdm.motion_dim,
        torch_lmdm.cond_dim,
    )
    assert lmdm.guidance_weight == 2.0 and torch.equal(lmdm.alphas_cumprod, torch_lmdm.alphas_cumprod)


def test_half_a_pair_is_a_checkpoint_error_naming_the_export(pair_dir, tmp_path):
    shutil.copy(pair_dir / "lmdm_v0.4_hubert.onnx", tmp_path)
    assert isinstance(load_onnx_network("lmdm", tmp_path), OnnxLmdm)  # official only: the guided step
    shutil.copy(pair_dir / LMDM_PAIR_IO["lmdm_step"].onnx_file, tmp_path)
    with pytest.raises(CheckpointError, match=r"_memory.onnx is missing.*lmdm_form=cached"):
        load_onnx_network("lmdm", tmp_path)


@pytest.mark.parametrize("weight", [2.0, 1.0, 3.5])
def test_denoiser_matches_torch_at_any_weight_and_time(pair_dir, torch_lmdm, weight):
    lmdm = load_onnx_network("lmdm", pair_dir)
    kp_cond, cond, x = _window_inputs(torch_lmdm, seed=1)
    ours, ref = lmdm.guided_denoiser(kp_cond, cond, weight), torch_lmdm.guided_denoiser(kp_cond, cond, weight)
    for t in (torch.tensor([999]), torch.tensor([412.5]), torch.tensor(0)):
        a, b = ours(x, t), ref(x, t)
        assert isinstance(a, torch.Tensor) and a.shape == x.shape
        assert max_rel_err(a, b.numpy()) < TOLERANCE


def test_official_interface_and_mixed_times(tiny_onnx, torch_lmdm):
    """runner(x, cond_frame, cond, time_cond) -> (pred_noise, x_start), one time per row included (batch
    2)."""
    lmdm = load_onnx_network("lmdm", tiny_onnx(["lmdm"], ["dynamic_batch=true", "lmdm_form=cached"]))
    gen = torch.Generator().manual_seed(4)
    x = torch.randn((2, torch_lmdm.seq_frames, torch_lmdm.motion_dim), generator=gen)
    cond_frame = torch.randn((2, torch_lmdm.motion_dim), generator=gen)
    cond = torch.randn((2, torch_lmdm.seq_frames, torch_lmdm.cond_dim), generator=gen)
    times = torch.tensor([800, 120])
    ours, ref = lmdm(x, cond_frame, cond, times), torch_lmdm(x, cond_frame, cond, times)
    assert len(ours) == 2
    for a, b in zip(ours, ref):
        assert max_rel_err(a, b.numpy()) < TOLERANCE
    numpy_out = lmdm(*(v.numpy() for v in (x, cond_frame, cond, times)))
    assert max_rel_err(numpy_out[1], ref[1].numpy()) < TOLERANCE


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_window_sampler_on_the_pair_matches_pytorch(pair_dir, torch_lmdm, sampler):
    onnx_lmdm = load_onnx_network("lmdm", pair_dir)
    kp_cond, cond, _ = _window_inputs(torch_lmdm, seed=2)
    config = SamplerConfig(name=sampler, steps=5)
    windows = {}
    for key, lmdm in (("pytorch", torch_lmdm), ("onnx", onnx_lmdm)):
        window_sampler = build_window_sampler(lmdm, config, make_noise("torch", 7))
        windows[key] = torch.cat([window_sampler(kp_cond, cond), window_sampler(kp_cond, cond)])
    assert windows["onnx"].shape == (2, torch_lmdm.seq_frames, torch_lmdm.motion_dim)
    assert not torch.equal(windows["onnx"][0], windows["onnx"][1])  # each window draws its own x_T
    assert max_rel_err(windows["onnx"], windows["pytorch"].numpy()) < TOLERANCE


def test_every_sampler_and_weight_builds_on_the_pair(pair_dir):
    lmdm = load_onnx_network("lmdm", pair_dir)
    kp_cond, cond, _ = _window_inputs(lmdm, seed=3)
    for name in ("unipc", "euler", "heun"):
        motion = build_window_sampler(
            lmdm, SamplerConfig(name=name, steps=2, guidance_scale=1.5), make_noise("torch", 0)
        )(kp_cond, cond)
        assert motion.shape == (1, lmdm.seq_frames, lmdm.motion_dim) and torch.isfinite(motion).all()


def test_official_step_refuses_what_only_the_pair_can_do(pair_dir, tmp_path):
    shutil.copy(pair_dir / "lmdm_v0.4_hubert.onnx", tmp_path)
    official = load_onnx_network("lmdm", tmp_path)
    with pytest.raises(ConfigError, match=r"guidance weight 2 baked in.*lmdm_form=cached"):
        build_window_sampler(
            official, SamplerConfig(name="ddim", steps=2, guidance_scale=1.5), make_noise("torch", 0)
        )
    with pytest.raises(ConfigError, match=r"integer diffusion times.*lmdm_form=cached"):
        official.check_sampler(2.0, torch.tensor([999.0, 412.5]))
    # Integer grids still run on the official step (one whole guided step per evaluation).
    assert (
        build_window_sampler(official, SamplerConfig(name="dpmpp_2m", steps=2), make_noise("torch", 0))
        is not None
    )


def test_runner_over_torch_graphs_is_exact_enough():
    """CachedPairLmdm's logic without onnxruntime (as the TensorRT backend uses it): the torch graphs as
    GraphFns."""
    torch_lmdm = make_backend("pytorch", model_name="tiny").load("lmdm")
    module = torch_lmdm.module
    memory_graph, step_graph = ConditionMemoryGraph(module), CachedStepGraph(module)

    def run(graph):
        def call(*inputs):
            with torch.no_grad():
                out = graph(*inputs)
            return list(out) if isinstance(out, tuple) else [out]

        return call

    runner = CachedPairLmdm(
        run(memory_graph),
        run(step_graph),
        seq_frames=module.seq_frames,
        motion_dim=module.motion_dim,
        cond_dim=module.cond_dim,
        guidance_weight=2.0,
        label="torch",
    )
    kp_cond, cond, x = _window_inputs(module, seed=6)
    t = torch.tensor([333])
    ours = runner.guided_denoiser(kp_cond, cond)(x, t)
    ref = torch_lmdm.guided_denoiser(kp_cond, cond)(x, t)
    assert max_rel_err(ours, ref.numpy()) < 1e-5
    runner.guidance_weight = 3.0  # a graph input: any value is accepted
    assert runner.guidance_weight == 3.0
    with pytest.raises(InputError, match=r"condition must be \(B, 80"):
        runner.guided_denoiser(kp_cond, cond[:, :40])


def test_io_binding_gives_the_outputs_of_a_plain_run(pair_dir, torch_lmdm):
    """The GPU path binds the pair's tensors by pointer (memory kept on the device between steps); on the CPU
    the same binding gives the plain run's outputs exactly."""
    from ditto_research.backends.onnx import OnnxNetwork

    memory = OnnxNetwork(
        "lmdm_memory", pair_dir / LMDM_PAIR_IO["lmdm_memory"].onnx_file, io=LMDM_PAIR_IO["lmdm_memory"]
    )
    step = OnnxNetwork(
        "lmdm_step", pair_dir / LMDM_PAIR_IO["lmdm_step"].onnx_file, io=LMDM_PAIR_IO["lmdm_step"]
    )
    kp_cond, cond, x = _window_inputs(torch_lmdm, seed=4)
    plain = memory.run_numpy(cond)
    bound = memory.run_bound([cond], [torch.empty(s) for s in memory.output_shapes(1)])
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(plain, bound))
    inputs = [x, torch.tensor([321.0]), kp_cond, *bound, torch.tensor([2.0])]
    (expected,) = step.run_numpy(*inputs)
    (got,) = step.run_bound(inputs, [torch.empty(x.shape)])
    np.testing.assert_array_equal(got.numpy(), expected)
    with pytest.raises(InputError, match="must be a contiguous tensor on cpu"):
        step.run_bound(inputs, [torch.empty(x.shape).transpose(1, 2)])
