"""Warping network (LivePortrait's W, as shipped with Ditto): warp f_s from source to driving keypoints.

Two stages:

1. :class:`DenseMotionNetwork` turns the sparse keypoint motion into a dense backward flow. Each of the
   ``num_kp`` keypoints proposes the translation ``grid - kp_driving + kp_source``; a background proposal is
   the identity. The compressed feature is warped by every proposal, stacked with Gaussian heat maps of the
   keypoint displacement, and an hourglass predicts a per-voxel softmax over the proposals (the flow is the
   weighted mix) plus a 2-D occlusion map.
2. :class:`WarpingNetwork` samples f_s along that flow, folds depth into channels and applies two 2-D convs.

Coordinates are normalised to [-1, 1] in (x, y, z) = (width, height, depth) order, as ``grid_sample`` expects.
Module names follow the official checkpoint
(``dense_motion_network.{hourglass,mask,compress,norm,occlusion}``, ``third``, ``fourth``).

Shape legend: B batch, K = num_kp, C channels, D depth, H height, W width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ditto_research.errors import ConfigError, InputError
from ditto_research.models.blocks import Hourglass, SameBlock2d

__all__ = [
    "DenseMotion",
    "DenseMotionNetwork",
    "GridSample3d",
    "WarpingNetwork",
    "coordinate_grid_3d",
    "grid_sample_3d",
    "keypoint_gaussians",
]

GridSample3d = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(volume (N, C, D, H, W), grid (N, D', H', W', 3)) -> (N, C, D', H', W')."""

KP_VARIANCE = 0.01  # variance of the keypoint heat maps, in normalised coordinates


def grid_sample_3d(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear sampling with zero padding and ``align_corners=False`` (the reference setting).

    volume (N, C, D, H, W), grid (N, D', H', W', 3) holding (x, y, z) in [-1, 1] -> (N, C, D', H', W').
    Kept as the single place where 5-D sampling happens, so an exporter can swap in a decomposition.
    """
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def coordinate_grid_3d(depth: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """Identity sampling grid (D, H, W, 3) of (x, y, z) spanning [-1, 1]; dtype/device from ``like``."""

    def axis(n: int) -> torch.Tensor:
        steps = torch.arange(n, dtype=like.dtype, device=like.device)
        return 2 * (steps / (n - 1)) - 1

    z, y, x = axis(depth), axis(height), axis(width)
    return torch.stack(
        [
            x.view(1, 1, width).expand(depth, height, width),
            y.view(1, height, 1).expand(depth, height, width),
            z.view(depth, 1, 1).expand(depth, height, width),
        ],
        dim=3,
    )


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor, variance: float = KP_VARIANCE) -> torch.Tensor:
    """Unnormalised isotropic Gaussians exp(-|p - kp|^2 / (2 variance)).

    kp (B, K, 3), grid (D, H, W, 3) -> (B, K, D, H, W).
    """
    batch, num_kp, _ = kp.shape
    offset = grid.unsqueeze(0).unsqueeze(0) - kp.view(batch, num_kp, 1, 1, 1, 3)
    return torch.exp(-0.5 * offset.pow(2).sum(-1) / variance)


class DenseMotion(NamedTuple):
    """Outputs of :class:`DenseMotionNetwork`."""

    mask: torch.Tensor  # (B, K+1, D, H, W): softmax weights of [background, keypoint 1..K] proposals
    deformation: torch.Tensor  # (B, D, H, W, 3): backward flow, a grid for grid_sample_3d
    occlusion_map: torch.Tensor | None  # (B, 1, H, W) in (0, 1), or None without occlusion estimation


class DenseMotionNetwork(nn.Module):
    """Sparse keypoint motion -> dense flow (and occlusion map) for a feature volume.

    feature (B, feature_channel, D, H, W), kp_source / kp_driving (B, num_kp, 3) -> :class:`DenseMotion`.
    H and W must be divisible by 2^num_blocks; D must equal ``reshape_depth`` when estimating occlusion.
    """

    def __init__(
        self,
        block_expansion: int = 32,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_kp: int = 21,
        feature_channel: int = 32,
        reshape_depth: int = 16,
        compress: int = 4,
        estimate_occlusion_map: bool = True,
        grid_sample: GridSample3d = grid_sample_3d,
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.grid_sample = grid_sample
        # Each of the K+1 proposals contributes its heat map plus `compress` warped feature channels.
        self.hourglass = Hourglass(
            block_expansion=block_expansion,
            in_features=(num_kp + 1) * (compress + 1),
            max_features=max_features,
            num_blocks=num_blocks,
        )
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        # Identity sampling grids by (D, H, W, dtype, device): built once on the device, not every forward.
        self._grids: dict[tuple, torch.Tensor] = {}
        self.occlusion: nn.Conv2d | None = None
        if estimate_occlusion_map:
            folded_channels = self.hourglass.out_filters * reshape_depth
            self.occlusion = nn.Conv2d(folded_channels, 1, kernel_size=7, padding=3)

    def identity_grid(self, depth: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
        """:func:`coordinate_grid_3d` for ``like``'s dtype and device, cached (not while tracing)."""
        if torch.jit.is_tracing():
            return coordinate_grid_3d(depth, height, width, like=like)
        key = (depth, height, width, like.dtype, like.device)
        grid = self._grids.get(key)
        if grid is None:
            grid = self._grids[key] = coordinate_grid_3d(depth, height, width, like=like)
        return grid

    def sparse_motions(
        self, grid: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> torch.Tensor:
        """Per-proposal backward flows: identity, then grid - kp_driving_k + kp_source_k.

        grid (D, H, W, 3), kp_* (B, K, 3) -> (B, K+1, D, H, W, 3).
        """
        batch = kp_source.shape[0]
        identity = grid.unsqueeze(0).unsqueeze(0)  # (1, 1, D, H, W, 3)
        shift = (batch, self.num_kp, 1, 1, 1, 3)
        keypoint_flows = identity - kp_driving.view(shift) + kp_source.view(shift)
        return torch.cat([identity.expand(batch, 1, *grid.shape), keypoint_flows], dim=1)

    def deformed_features(self, feature: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
        """Warp the compressed feature by every proposal.

        feature (B, C, D, H, W), motions (B, K+1, D, H, W, 3) -> (B, K+1, C, D, H, W) (a permuted view).
        The K+1 grids are stacked along depth so one sampling call reads the shared volume
        (the reference repeats the volume K+1 times instead; the sampled values are the same).
        """
        batch, channels, depth, height, width = feature.shape
        proposals = motions.shape[1]
        grids = motions.reshape(batch, proposals * depth, height, width, 3)
        sampled = self.grid_sample(feature, grids)  # (B, C, (K+1)*D, H, W)
        return sampled.view(batch, channels, proposals, depth, height, width).transpose(1, 2)

    def heatmaps(self, grid: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """Gaussian(kp_driving) - Gaussian(kp_source), with an all-zero background map first.

        grid (D, H, W, 3), kp_* (B, K, 3) -> (B, K+1, 1, D, H, W).
        """
        difference = keypoint_gaussians(kp_driving, grid) - keypoint_gaussians(kp_source, grid)
        background = difference.new_zeros((difference.shape[0], 1, *difference.shape[2:]))
        return torch.cat([background, difference], dim=1).unsqueeze(2)

    def forward(
        self, feature: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> DenseMotion:
        """feature (B, feature_channel, D, H, W), kp_* (B, K, 3) -> :class:`DenseMotion`."""
        batch, _, depth, height, width = feature.shape
        feature = F.relu(self.norm(self.compress(feature)), inplace=True)  # (B, compress, D, H, W)

        grid = self.identity_grid(depth, height, width, feature)
        motions = self.sparse_motions(grid, kp_source, kp_driving)
        stacked = torch.cat(
            [self.heatmaps(grid, kp_source, kp_driving), self.deformed_features(feature, motions)], dim=2
        )  # (B, K+1, 1 + compress, D, H, W)
        prediction = self.hourglass(stacked.view(batch, -1, depth, height, width))

        mask = F.softmax(self.mask(prediction), dim=1)  # (B, K+1, D, H, W)
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)  # (B, D, H, W, 3)

        occlusion_map = None
        if self.occlusion is not None:
            folded = prediction.view(batch, -1, height, width)  # depth folded into channels
            occlusion_map = torch.sigmoid(self.occlusion(folded))
        return DenseMotion(mask=mask, deformation=deformation, occlusion_map=occlusion_map)


class WarpingNetwork(nn.Module):
    """f_s (B, reshape_channel, reshape_depth, H, W), kp_source / kp_driving (B, num_kp, 3)
    -> warped feature (B, block_expansion * 2^num_down_blocks, H, W).

    Official defaults: (B, 32, 16, 64, 64) -> (B, 256, 64, 64). ``max_features`` is the channel count after
    folding depth into channels and must equal ``reshape_channel * reshape_depth``. The ``dense_*`` arguments
    size the inner :class:`DenseMotionNetwork` (the reference hard-codes 32 / 1024 / 5).
    """

    def __init__(
        self,
        num_kp: int = 21,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        estimate_occlusion_map: bool = True,
        use_occlusion_map: bool = True,
        dense_block_expansion: int = 32,
        dense_max_features: int = 1024,
        dense_num_blocks: int = 5,
        compress: int = 4,
        grid_sample: GridSample3d = grid_sample_3d,
    ) -> None:
        super().__init__()
        if reshape_channel * reshape_depth != max_features:
            raise ConfigError(
                f"WarpingNetwork: reshape_channel * reshape_depth ({reshape_channel} * {reshape_depth}) must "
                f"equal max_features ({max_features}); change one of them"
            )
        self.num_kp = num_kp
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.dense_num_blocks = dense_num_blocks
        self.use_occlusion_map = use_occlusion_map
        self.grid_sample = grid_sample

        self.dense_motion_network = DenseMotionNetwork(
            block_expansion=dense_block_expansion,
            num_blocks=dense_num_blocks,
            max_features=dense_max_features,
            num_kp=num_kp,
            feature_channel=reshape_channel,
            reshape_depth=reshape_depth,
            compress=compress,
            estimate_occlusion_map=estimate_occlusion_map,
            grid_sample=grid_sample,
        )
        out_channels = block_expansion * 2**num_down_blocks
        self.third = SameBlock2d(max_features, out_channels, kernel_size=3, padding=1, use_leaky_relu=True)
        self.fourth = nn.Conv2d(out_channels, out_channels, kernel_size=1, stride=1)

    def _check_inputs(
        self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> None:
        expected = (self.reshape_channel, self.reshape_depth)
        if feature_3d.dim() != 5 or tuple(feature_3d.shape[1:3]) != expected:
            raise InputError(
                f"WarpingNetwork expects feature_3d (B, {expected[0]}, {expected[1]}, H, W); "
                f"got shape {tuple(feature_3d.shape)}"
            )
        multiple = 2**self.dense_num_blocks
        if feature_3d.shape[3] % multiple or feature_3d.shape[4] % multiple:
            raise InputError(
                f"WarpingNetwork needs feature_3d height and width divisible by {multiple}; "
                f"got {tuple(feature_3d.shape[3:])} (use a source crop size divisible by {4 * multiple})"
            )
        for name, kp in (("kp_source", kp_source), ("kp_driving", kp_driving)):
            if tuple(kp.shape) != (feature_3d.shape[0], self.num_kp, 3):
                raise InputError(
                    f"WarpingNetwork expects {name} of shape ({feature_3d.shape[0]}, {self.num_kp}, 3); "
                    f"got {tuple(kp.shape)}"
                )

    def forward(
        self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> torch.Tensor:
        """feature_3d (B, C, D, H, W), kp_source / kp_driving (B, K, 3) -> out (B, 256, H, W)."""
        self._check_inputs(feature_3d, kp_source, kp_driving)
        motion = self.dense_motion_network(feature_3d, kp_source, kp_driving)
        warped = self.grid_sample(feature_3d, motion.deformation)  # (B, C, D, H, W)
        batch, channels, depth, height, width = warped.shape
        out = self.fourth(self.third(warped.view(batch, channels * depth, height, width)))
        if self.use_occlusion_map and motion.occlusion_map is not None:
            out = out.mul_(motion.occlusion_map)
        return out
