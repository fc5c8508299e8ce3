"""WarpingNetwork / DenseMotionNetwork: checkpoint interface, golden parity, geometry and batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ditto_research.errors import ConfigError, InputError
from ditto_research.models.warping import (
    DenseMotionNetwork,
    WarpingNetwork,
    coordinate_grid_3d,
    grid_sample_3d,
)
from tests.helpers import max_abs_err

# No fp64 yardstick (a float64 Conv3d k=7 needs ~25 GB): 4.5x the measured max abs error 8.9e-6
# (|out| <= 1.3).
GOLDEN_TOL = 4e-5


def tiny_warping(**overrides: object) -> WarpingNetwork:
    """Narrow network, official structure: feature_3d (B, 8, 4, H, W) -> (B, 32, H, W); H, W % 4 == 0."""
    kwargs: dict[str, object] = dict(
        block_expansion=8,
        max_features=32,
        reshape_channel=8,
        reshape_depth=4,
        dense_block_expansion=8,
        dense_max_features=32,
        dense_num_blocks=2,
        compress=2,
    )
    kwargs.update(overrides)
    torch.manual_seed(0)
    return WarpingNetwork(**kwargs).eval()  # type: ignore[arg-type]


def random_keypoints(batch: int, num_kp: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    kp_source = torch.rand(batch, num_kp, 3, generator=gen) * 1.6 - 0.8
    kp_driving = kp_source + 0.1 * torch.randn(batch, num_kp, 3, generator=gen)
    return kp_source, kp_driving


def test_golden_parity(det_init, load_golden) -> None:
    golden = load_golden("warp_network")
    shape = tuple(int(s) for s in golden["feature_3d_shape"])
    rng = np.random.RandomState(int(golden["feature_3d_seed"]))
    feature_3d = rng.standard_normal(shape).astype(np.float32)
    assert np.array_equal(feature_3d.ravel()[:16], golden["feature_3d_head"])
    # The same float64 sum of the same numbers: measured bit-identical.
    assert float(feature_3d.astype(np.float64).sum()) == float(golden["feature_3d_sum"])

    model = WarpingNetwork()
    model.load_state_dict(det_init.fill_state_dict(model, int(golden["seed"])), strict=True)
    model.eval()
    kp_source, kp_driving = torch.from_numpy(golden["kp_source"]), torch.from_numpy(golden["kp_driving"])
    out = model(torch.from_numpy(feature_3d), kp_source, kp_driving)
    assert isinstance(out, torch.Tensor)
    err = max_abs_err(out, golden["out"])
    assert err <= GOLDEN_TOL, f"out max abs err {err:.3g} > {GOLDEN_TOL}"


def test_coordinate_grid_spans_unit_cube_in_xyz_order() -> None:
    grid = coordinate_grid_3d(3, 4, 5, like=torch.empty(0))
    assert grid.shape == (3, 4, 5, 3)
    assert grid[0, 0, 0].tolist() == [-1.0, -1.0, -1.0] and grid[-1, -1, -1].tolist() == [1.0, 1.0, 1.0]
    assert torch.equal(grid[1, 2, :, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))  # x follows width
    assert torch.equal(grid[:, 0, 0, 2], torch.tensor([-1.0, 0.0, 1.0]))  # z follows depth


def test_deformed_features_match_per_proposal_sampling() -> None:
    """The stacked-grid sampling equals sampling a repeated volume once per proposal (the reference way)."""
    net = DenseMotionNetwork(
        block_expansion=4,
        num_blocks=1,
        max_features=8,
        num_kp=3,
        feature_channel=2,
        reshape_depth=3,
        compress=2,
    )
    gen = torch.Generator().manual_seed(2)
    feature = torch.randn(2, 2, 3, 4, 6, generator=gen)
    kp_source, kp_driving = random_keypoints(2, 3, seed=3)
    motions = net.sparse_motions(coordinate_grid_3d(3, 4, 6, like=feature), kp_source, kp_driving)
    assert motions.shape == (2, 4, 3, 4, 6, 3)
    ours = net.deformed_features(feature, motions)
    for k in range(motions.shape[1]):
        expected = grid_sample_3d(feature, motions[:, k])
        assert torch.equal(ours[:, k], expected), f"proposal {k}"


def test_equal_keypoints_give_identity_flow() -> None:
    net = tiny_warping().dense_motion_network
    feature = torch.randn(2, 8, 4, 8, 12, generator=torch.Generator().manual_seed(4))
    kp, _ = random_keypoints(2, 21, seed=5)
    motion = net(feature, kp, kp)
    identity = coordinate_grid_3d(4, 8, 12, like=feature).expand(2, -1, -1, -1, -1)
    assert motion.mask.shape == (2, 22, 4, 8, 12)
    assert torch.allclose(motion.mask.sum(1), torch.ones(2, 4, 8, 12), atol=1e-6)
    assert torch.allclose(motion.deformation, identity, atol=1e-6)
    assert motion.occlusion_map is not None and motion.occlusion_map.shape == (2, 1, 8, 12)


def test_batch_items_are_independent_at_another_resolution() -> None:
    model = tiny_warping()
    feature_3d = torch.randn(3, 8, 4, 8, 12, generator=torch.Generator().manual_seed(6))
    kp_source, kp_driving = random_keypoints(3, 21, seed=7)
    batched = model(feature_3d, kp_source, kp_driving)
    assert batched.shape == (3, 32, 8, 12) and torch.isfinite(batched).all()
    for i in range(3):
        single = model(feature_3d[i : i + 1], kp_source[i : i + 1], kp_driving[i : i + 1])
        assert torch.allclose(batched[i : i + 1], single, atol=1e-5, rtol=0), f"item {i} differs"


def test_grid_sample_is_swappable() -> None:
    calls: list[tuple[int, ...]] = []

    def recording_sampler(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(grid.shape))
        return grid_sample_3d(volume, grid)

    feature_3d = torch.randn(1, 8, 4, 8, 8, generator=torch.Generator().manual_seed(8))
    kp_source, kp_driving = random_keypoints(1, 21, seed=9)
    expected = tiny_warping()(feature_3d, kp_source, kp_driving)
    out = tiny_warping(grid_sample=recording_sampler)(feature_3d, kp_source, kp_driving)
    assert calls == [(1, 22 * 4, 8, 8, 3), (1, 4, 8, 8, 3)]  # sparse proposals, then the final warp
    assert torch.equal(out, expected)


def test_without_occlusion_map() -> None:
    model = tiny_warping(estimate_occlusion_map=False)
    assert not any(key.startswith("dense_motion_network.occlusion") for key in model.state_dict())
    out = model(torch.randn(1, 8, 4, 8, 8), *random_keypoints(1, 21, seed=10))
    assert out.shape == (1, 32, 8, 8)


def test_rejects_bad_configuration_and_inputs() -> None:
    with pytest.raises(ConfigError, match="reshape_channel"):
        WarpingNetwork(reshape_depth=8)
    model = tiny_warping()
    kp_source, kp_driving = random_keypoints(1, 21, seed=11)
    with pytest.raises(InputError, match="feature_3d"):
        model(torch.randn(1, 8, 5, 8, 8), kp_source, kp_driving)
    with pytest.raises(InputError, match="divisible by 4"):
        model(torch.randn(1, 8, 4, 8, 10), kp_source, kp_driving)
    with pytest.raises(InputError, match="kp_driving"):
        model(torch.randn(1, 8, 4, 8, 8), kp_source, kp_driving[:, :20])
