"""Convolution building blocks shared by the appearance extractor and the warping network.

Every block is conv -> BatchNorm -> activation (plus pooling / upsampling where the name says so).
Attribute names (``conv``, ``norm``, ``conv1``, ``norm2``, ``down_blocks``, ``up_blocks``, ...) are part of
the checkpoint interface and must not change; everything else here is free to evolve.

Shape legend: B batch, C channels, D depth, H height, W width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DownBlock2d",
    "DownBlock3d",
    "Hourglass",
    "HourglassDecoder",
    "HourglassEncoder",
    "ResBlock3d",
    "SameBlock2d",
    "UpBlock3d",
]


class SameBlock2d(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU (or LeakyReLU, slope 0.01); keeps H and W.

    (B, in_features, H, W) -> (B, out_features, H, W)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int = 3,
        padding: int = 1,
        use_leaky_relu: bool = False,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.use_leaky_relu = use_leaky_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        if self.use_leaky_relu:
            return F.leaky_relu(out, 0.01, inplace=True)
        return F.relu(out, inplace=True)


class DownBlock2d(nn.Module):
    """Conv2d -> BatchNorm2d -> ReLU -> 2x2 average pool.

    (B, in_features, H, W) -> (B, out_features, H/2, W/2)
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(x)), inplace=True)
        return F.avg_pool2d(out, kernel_size=2)


class DownBlock3d(nn.Module):
    """Conv3d -> BatchNorm3d -> ReLU -> average pool over (1, 2, 2): depth is kept, H and W halve.

    (B, in_features, D, H, W) -> (B, out_features, D, H/2, W/2)
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(x)), inplace=True)
        return F.avg_pool3d(out, kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest upsampling over (1, 2, 2) -> Conv3d -> BatchNorm3d -> ReLU.

    (B, in_features, D, H, W) -> (B, out_features, D, 2H, 2W)
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return F.relu(self.norm(self.conv(out)), inplace=True)


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(norm2(conv1(relu(norm1(x)))))).

    (B, C, D, H, W) -> (B, C, D, H, W)
    """

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv3d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm3d(in_features, affine=True)
        self.norm2 = nn.BatchNorm3d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x), inplace=True))
        out = self.conv2(F.relu(self.norm2(out), inplace=True))
        return out.add_(x)


def hourglass_width(block_expansion: int, max_features: int, level: int) -> int:
    """Channel count of hourglass level ``level`` (level 0 is the full-resolution decoder output)."""
    return min(max_features, block_expansion * 2**level)


class HourglassEncoder(nn.Module):
    """``num_blocks`` DownBlock3d's; returns the input and every intermediate as skip connections.

    (B, in_features, D, H, W) -> [x, (B, c_1, D, H/2, W/2), ..., (B, c_n, D, H/2^n, W/2^n)]
    with c_i = min(max_features, block_expansion * 2^i).
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        widths = [in_features] + [
            hourglass_width(block_expansion, max_features, i + 1) for i in range(num_blocks)
        ]
        self.down_blocks = nn.ModuleList(
            DownBlock3d(widths[i], widths[i + 1], kernel_size=3, padding=1) for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        for block in self.down_blocks:
            features.append(block(features[-1]))
        return features


class HourglassDecoder(nn.Module):
    """Mirror of :class:`HourglassEncoder`: upsample, concatenate the matching skip, repeat; then a 3x3x3
    Conv3d -> BatchNorm3d -> ReLU over the final concatenation.

    skips [x, ..., deepest] -> (B, out_filters, D, H, W), out_filters = block_expansion + in_features.
    """

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        up_blocks = []
        for level in reversed(range(num_blocks)):
            # The deepest block sees the encoder output alone; the others see [upsampled, skip] concatenated.
            skip_factor = 1 if level == num_blocks - 1 else 2
            fan_in = skip_factor * hourglass_width(block_expansion, max_features, level + 1)
            fan_out = hourglass_width(block_expansion, max_features, level)
            up_blocks.append(UpBlock3d(fan_in, fan_out, kernel_size=3, padding=1))
        self.up_blocks = nn.ModuleList(up_blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)), inplace=True)


class Hourglass(nn.Module):
    """3-D U-Net over (H, W) with the depth axis untouched.

    (B, in_features, D, H, W) -> (B, block_expansion + in_features, D, H, W); H and W must be divisible by
    2^num_blocks.
    """

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256
    ) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
