"""StitchingNetwork: checkpoint interface and key stripping, golden parity, batch independence."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import torch

from ditto_research.errors import CheckpointError, ConfigError
from ditto_research.models.stitching import StitchingNetwork, stitching_state_dict_from_checkpoint
from tests.helpers import max_abs_err


@pytest.fixture(scope="module")
def golden(load_golden) -> dict[str, np.ndarray]:
    return load_golden("stitch_network")


@pytest.fixture(scope="module")
def seeded_stitcher(det_init: ModuleType, golden: dict[str, np.ndarray]) -> StitchingNetwork:
    """The official-size network with the golden's own det_init fill."""
    model = StitchingNetwork().eval()
    model.load_state_dict(det_init.fill_state_dict(model, int(golden["seed"])), strict=True)
    return model


def test_golden_parity(
    seeded_stitcher: StitchingNetwork, golden: dict[str, np.ndarray], golden_kernels: bool
) -> None:
    # 2 ulps of the largest output: measured 2 (2.4e-7 at |v| <= 1.44) where MKL sums in another order
    tol = 2 * float(np.spacing(np.float32(np.abs(golden["kp_driving_new"]).max())))
    for i in range(golden["kp_source"].shape[0]):  # the reference ran separate batch-1 calls
        out = seeded_stitcher(
            torch.from_numpy(golden["kp_source"][i]), torch.from_numpy(golden["kp_driving"][i])
        )
        if golden_kernels:  # the same float32 MLP ops in the same order on the same kernels: bit-identical
            np.testing.assert_array_equal(out.numpy(), golden["kp_driving_new"][i], err_msg=f"call {i}")
        else:
            assert max_abs_err(out, golden["kp_driving_new"][i]) <= tol, f"call {i}"


def test_batch_items_are_independent(seeded_stitcher: StitchingNetwork) -> None:
    gen = torch.Generator().manual_seed(3)
    kp_source, kp_driving = torch.randn(5, 21, 3, generator=gen), torch.randn(5, 21, 3, generator=gen)
    batched = seeded_stitcher(kp_source, kp_driving)
    assert batched.shape == (5, 21, 3)
    for i in range(5):
        single = seeded_stitcher(kp_source[i : i + 1], kp_driving[i : i + 1])
        assert max_abs_err(batched[i : i + 1], single.numpy()) <= 1e-6, i


def test_offsets_are_per_keypoint_plus_shared_xy() -> None:
    """A zero-weight MLP whose last bias is known: every keypoint moves by delta_k + (tx, ty, 0)."""
    model = StitchingNetwork(input_size=12, hidden_sizes=(4,), output_size=8).eval()
    for param in model.parameters():
        torch.nn.init.zeros_(param)
    bias = torch.arange(1.0, 9.0)
    model.mlp[-1].bias.copy_(bias)
    kp_driving = torch.randn(2, 2, 3)
    out = model(torch.randn(2, 2, 3), kp_driving)
    expected = kp_driving + bias[:6].reshape(2, 3) + torch.tensor([7.0, 8.0, 0.0])
    assert torch.equal(out, expected)


def test_inconsistent_sizes_are_rejected() -> None:
    with pytest.raises(ConfigError):
        StitchingNetwork(input_size=126, output_size=64)


def test_checkpoint_key_stripping_loads_strictly() -> None:
    reference = StitchingNetwork()
    ddp_keys = {f"module.{key}": value.clone() for key, value in reference.state_dict().items()}
    ddp_keys["mlp.module.0.weight"] = ddp_keys.pop("module.mlp.0.weight")  # any occurrence is removed
    checkpoint = {"retarget_eye": {"x": torch.zeros(1)}, "retarget_shoulder": ddp_keys}
    state = stitching_state_dict_from_checkpoint(checkpoint)
    assert sorted(state) == sorted(reference.state_dict())
    model = StitchingNetwork()
    model.load_state_dict(state, strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.state_dict().items())


@pytest.mark.parametrize(
    ("checkpoint", "message"),
    [
        ({"retarget_eye": {}, "retarget_lip": {}}, "retarget_shoulder"),
        ({"retarget_shoulder": [1, 2]}, "state dict"),
        ([("retarget_shoulder", {})], "expected a dict"),
    ],
)
def test_checkpoint_errors_are_clear(checkpoint: object, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        stitching_state_dict_from_checkpoint(checkpoint)
