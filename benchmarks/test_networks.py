"""One forward pass of each of the six networks, on the inputs the pipeline gives them (batch 1)."""

from __future__ import annotations

import pytest
import torch

from ditto_research.pipeline.registration import to_network_input


@pytest.fixture(scope="module")
def inputs(bench):
    """Realistic inputs: the registered example face, its keypoints, its warped feature, an LMDM window."""
    nets, frame = bench.session.networks, bench.source.frames[0]
    image = to_network_input(frame.crop256)
    kp = torch.from_numpy(frame.x_s_info["kp"].reshape(1, 21, 3)).float()
    f_s = bench.source.appearance.get(0)
    lmdm = nets.lmdm
    generator = torch.Generator().manual_seed(0)
    window = (1, lmdm.seq_frames)
    return {
        "image": image,
        "kp": kp,
        "f_s": f_s,
        "feature": nets.warp_network(f_s, kp, kp),
        "x": torch.randn(*window, lmdm.motion_dim, generator=generator),
        "cond_frame": torch.randn(1, lmdm.motion_dim, generator=generator),
        "cond": torch.randn(*window, lmdm.cond_dim, generator=generator),
        "t": torch.tensor([500], dtype=torch.long),
    }


def test_appearance_extractor(run, bench, inputs):
    assert run(bench.session.networks.appearance_extractor, inputs["image"]).ndim == 5


def test_motion_extractor(run, bench, inputs):
    assert run(bench.session.networks.motion_extractor, inputs["image"]) is not None


def test_warp_network(run, bench, inputs):
    assert run(bench.session.networks.warp_network, inputs["f_s"], inputs["kp"], inputs["kp"]).ndim == 4


def test_decoder(run, bench, inputs):
    assert run(bench.session.networks.decoder, inputs["feature"]).shape[1] == 3


def test_stitch_network(run, bench, inputs):
    assert run(bench.session.networks.stitch_network, inputs["kp"], inputs["kp"]).shape == (1, 21, 3)


def test_lmdm_guided_step(run, bench, inputs):
    """One denoising step with both guidance branches (the ONNX interface of the LMDM)."""
    noise, x_start = run(
        bench.session.networks.lmdm, inputs["x"], inputs["cond_frame"], inputs["cond"], inputs["t"]
    )
    assert noise.shape == x_start.shape == inputs["x"].shape
