"""5-D grid sampling written with gathers and trilinear weights, for runtimes without a 5-D ``GridSample``.

``F.grid_sample`` on a volume exports to ONNX ``GridSample`` (opset 20), which TensorRT below 11.2 and many
other runtimes cannot run on 5-D inputs (the original ships a custom TensorRT plugin for it). The functions
here compute the same values from ops every runtime has (Floor, Min/Max, Cast, Gather, Where, element-wise
math): bilinear interpolation, zero padding, as the warping network uses it.

The arithmetic follows PyTorch's CPU kernel term by term (corner order top-north-west .. bottom-south-east,
weights multiplied x * y * z, out-of-range corners skipped), so on CPU the result equals the native op up to
a few float32 ulps.

Notation: N batch, C channels, (D, H, W) the input volume, (D', H', W') the sampling grid, P = D' * H' * W'.
"""

from __future__ import annotations

import torch
from torch import nn

from ditto_research.choices import GRID_SAMPLE_MODES, check_choice

__all__ = [
    "DecomposedGridSample3d",
    "NativeGridSample3d",
    "grid_sample_3d_decomposed",
    "make_grid_sample",
    "unnormalize",
]


def unnormalize(coord: torch.Tensor, size: int | torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Normalised [-1, 1] coordinate -> voxel index space (the ``grid_sample`` convention)."""
    if align_corners:
        return (coord + 1) / 2 * (size - 1)
    return ((coord + 1) * size - 1) / 2


def _corner_axis(
    index: torch.Tensor,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Index-space coordinate -> ((low corner, high corner), (low weight, high weight))."""
    low = torch.floor(index)
    high = low + 1
    return (low, high), (high - index, index - low)


def grid_sample_3d_decomposed(
    volume: torch.Tensor, grid: torch.Tensor, align_corners: bool = False
) -> torch.Tensor:
    """Trilinear ``grid_sample`` with zero padding.

    volume (N, C, D, H, W), grid (N, D', H', W', 3) holding (x, y, z) in [-1, 1] -> (N, C, D', H', W').
    Equals ``F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=...)``.
    """
    batch, channels, depth, height, width = volume.shape
    x, y, z = grid[..., 0], grid[..., 1], grid[..., 2]  # each (N, D', H', W')
    (x0, x1), (wx0, wx1) = _corner_axis(unnormalize(x, width, align_corners))
    (y0, y1), (wy0, wy1) = _corner_axis(unnormalize(y, height, align_corners))
    (z0, z1), (wz0, wz1) = _corner_axis(unnormalize(z, depth, align_corners))

    # Voxels as rows (N * D * H * W, C): one gather per corner reads all channels of a voxel at once.
    voxels = depth * height * width
    rows = volume.reshape(batch, channels, voxels).transpose(1, 2).reshape(batch * voxels, channels)
    batch_offset = (torch.arange(batch, device=volume.device) * voxels).view(batch, 1, 1, 1)

    def inside(coord: torch.Tensor, size: int) -> torch.Tensor:
        return (coord >= 0) & (coord <= size - 1)

    def clamped(coord: torch.Tensor, size: int) -> torch.Tensor:
        return coord.clamp(0, size - 1).to(torch.int64)

    out: torch.Tensor | None = None
    for zc, wz in ((z0, wz0), (z1, wz1)):  # top, bottom
        for yc, wy in ((y0, wy0), (y1, wy1)):  # north, south
            for xc, wx in ((x0, wx0), (x1, wx1)):  # west, east
                valid = inside(xc, width) & inside(yc, height) & inside(zc, depth)
                index = (clamped(zc, depth) * height + clamped(yc, height)) * width + clamped(xc, width)
                values = rows[(index + batch_offset).reshape(-1)].view(*index.shape, channels)
                weight = (wx * wy * wz).unsqueeze(-1)
                term = torch.where(valid.unsqueeze(-1), values * weight, torch.zeros((), dtype=values.dtype))
                out = term if out is None else out + term
    assert out is not None
    return out.permute(0, 4, 1, 2, 3).contiguous()


class DecomposedGridSample3d(nn.Module):
    """:func:`grid_sample_3d_decomposed` as a module, so exported node names carry a ``grid_sample`` scope.

    The fp16 conversion and the TensorRT builder key on that scope to keep these nodes in float32. Holds no
    parameters: swapping it into a warping network leaves the state dict unchanged.
    """

    def forward(self, volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        return grid_sample_3d_decomposed(volume, grid)


class NativeGridSample3d(nn.Module):
    """The native op (ONNX ``GridSample``, opset 20) as a module, for the same node naming."""

    def forward(self, volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        from ditto_research.models.warping import grid_sample_3d

        return grid_sample_3d(volume, grid)


def make_grid_sample(mode: str) -> nn.Module:
    """``native`` | ``decomposed`` -> a module to pass as the warping network's ``grid_sample=``."""
    check_choice("grid_sample", mode, GRID_SAMPLE_MODES)
    return NativeGridSample3d() if mode == "native" else DecomposedGridSample3d()
