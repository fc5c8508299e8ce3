"""backend=pytorch: the registry's modules behind the runner protocol, with autocast precisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ditto_research.backends import NETWORK_IO, RENDER_NETWORKS, NetworkRunner, example_inputs, make_backend
from ditto_research.backends.pytorch import TorchLmdm, TorchNetwork
from ditto_research.errors import CheckpointError, ConfigError, InputError
from ditto_research.models import NETWORK_NAMES, load_network


def test_runner_equals_the_module_with_the_pipeline_seeds():
    backend = make_backend("pytorch", model_name="tiny", seed=3)
    for name in ("stitch_network", "warp_network"):
        runner = backend.load(name)
        assert isinstance(runner, NetworkRunner) and backend.load(name) is runner  # built once
        module = load_network(name, tiny=True, seed=3 + NETWORK_NAMES.index(name))
        inputs = example_inputs(name, module)
        assert torch.equal(runner(*inputs), module(*inputs))


def test_multi_output_order_and_array_kinds():
    runner = make_backend("pytorch", model_name="tiny").load("motion_extractor")
    image = example_inputs("motion_extractor")[0]
    outputs = runner(image)
    assert isinstance(outputs, tuple) and len(outputs) == len(NETWORK_IO["motion_extractor"].outputs)
    assert outputs[0].shape[-1] == 66 and outputs[3].shape[-1] == 3  # pitch bins, t
    as_numpy = runner(image.numpy())
    assert all(isinstance(o, np.ndarray) for o in as_numpy)
    np.testing.assert_array_equal(as_numpy[6], outputs[6].numpy())
    with pytest.raises(InputError, match="takes 1 inputs"):
        runner(image, image)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_reduced_precision_autocasts_renderers_and_keeps_lmdm_fp32(precision):
    fp32 = make_backend("pytorch", model_name="tiny")
    low = make_backend("pytorch", model_name="tiny", precision=precision)
    image = example_inputs("appearance_extractor")[0]
    ref, out = fp32.load("appearance_extractor")(image), low.load("appearance_extractor")(image)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)
    assert float((out - ref).abs().max()) < 0.05 * float(ref.abs().max())
    lmdm = low.load("lmdm")
    assert isinstance(lmdm, TorchLmdm) and lmdm.precision == "fp32"
    inputs = example_inputs("lmdm", lmdm.module)
    assert all(torch.equal(a, b) for a, b in zip(lmdm(*inputs), fp32.load("lmdm")(*inputs)))


def test_lmdm_runner_delegates_the_sampler_interface():
    lmdm = make_backend("pytorch", model_name="tiny").load("lmdm")
    x, cond_frame, cond, _ = example_inputs("lmdm", lmdm.module, seed=2)
    t = torch.tensor([250])
    x_start = lmdm.guided_denoiser(cond_frame, cond)(x, t)
    ref_noise, ref_start = lmdm(x, cond_frame, cond, t)
    # The same module ops as the guided step (condition encoded once instead of per call): measured exact.
    assert torch.equal(x_start, ref_start)
    assert torch.equal(lmdm.predict_noise_from_start(x, t, x_start), ref_noise)
    lmdm.guidance_weight = 1.0
    assert lmdm.module.guidance_weight == 1.0 and lmdm.alphas_cumprod.shape == (1000,)


def test_cuda_without_cuda_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="no CUDA device"):
        make_backend("pytorch", device="cuda", model_name="tiny")


def test_checkpoints_are_required_for_model_ditto(tmp_path):
    backend = make_backend("pytorch", model_name="ditto", checkpoint_root=tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        backend.load("stitch_network")


def test_unknown_network_and_hubert():
    backend = make_backend("pytorch", model_name="tiny")
    with pytest.raises(ConfigError, match="choose one of"):
        backend.load("renderer")
    with pytest.raises(ConfigError, match="audio_encoder"):
        backend.load("hubert")
    assert set(backend.load_all(["stitch_network"])) == {"stitch_network"}
    assert set(RENDER_NETWORKS) == set(NETWORK_NAMES)


def test_torch_network_rejects_bad_precision():
    with pytest.raises(ConfigError, match="fp32, fp16, bf16"):
        TorchNetwork("stitch_network", load_network("stitch_network"), precision="int8")
