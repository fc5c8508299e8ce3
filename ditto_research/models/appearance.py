"""Appearance feature extractor (LivePortrait's F): source image -> 3-D appearance feature volume f_s.

The 2-D encoder output (B, max_features, H/4, W/4) is read as a volume with ``reshape_channel`` channels and
``reshape_depth`` depth slices, then refined by 3-D residual blocks. Module names follow the official
checkpoint (``first``, ``down_blocks.i``, ``second``, ``resblocks_3d.3dr{i}``).
"""

from __future__ import annotations

import torch
from torch import nn

from ditto_research.errors import ConfigError, InputError
from ditto_research.models.blocks import DownBlock2d, ResBlock3d, SameBlock2d

__all__ = ["AppearanceFeatureExtractor"]


class AppearanceFeatureExtractor(nn.Module):
    """Image (B, image_channel, H, W) in [0, 1] -> f_s (B, reshape_channel, reshape_depth, H/2^n, W/2^n).

    With the official defaults (n = num_down_blocks = 2): (B, 3, 256, 256) -> (B, 32, 16, 64, 64).
    ``max_features`` must equal ``reshape_channel * reshape_depth`` (the 2-D -> 3-D reshape).
    """

    def __init__(
        self,
        image_channel: int = 3,
        block_expansion: int = 64,
        num_down_blocks: int = 2,
        max_features: int = 512,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
    ) -> None:
        super().__init__()
        if reshape_channel * reshape_depth != max_features:
            raise ConfigError(
                f"AppearanceFeatureExtractor: reshape_channel * reshape_depth ({reshape_channel} * "
                f"{reshape_depth}) must equal max_features ({max_features}); change one of them"
            )
        self.image_channel = image_channel
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth

        self.first = SameBlock2d(image_channel, block_expansion, kernel_size=3, padding=1)
        widths = [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1], kernel_size=3, padding=1) for i in range(num_down_blocks)
        )
        self.second = nn.Conv2d(widths[-1], max_features, kernel_size=1, stride=1)
        # Keys are "resblocks_3d.3dr{i}.*" in the checkpoint, hence add_module on a Sequential.
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel, kernel_size=3, padding=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, image_channel, H, W) -> (B, reshape_channel, reshape_depth, H', W')."""
        if image.dim() != 4 or image.shape[1] != self.image_channel:
            raise InputError(
                f"AppearanceFeatureExtractor expects an image batch (B, {self.image_channel}, H, W); "
                f"got shape {tuple(image.shape)}"
            )
        out = self.first(image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        batch, _, height, width = out.shape
        volume = out.view(batch, self.reshape_channel, self.reshape_depth, height, width)
        return self.resblocks_3d(volume)
