"""Motion extractor: a ConvNeXt-V2 backbone that reads head pose, expression and canonical keypoints off a
face.

The network (LivePortrait's "M", reused by Ditto) maps a 256x256 RGB crop in [0, 1] to seven raw linear-head
outputs. Nothing is post-processed here: pose comes as 66-bin logits (``bin66_to_degree`` turns them into
degrees), ``exp`` and ``kp`` come flat as (B, 3 * num_kp).

Parameter names follow the official ``motion_extractor.pth`` exactly
(``detector.downsample_layers.0.0.weight``, ``detector.stages.2.5.grn.gamma``, ``detector.fc_pitch.bias``,
...), so that file loads with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ditto_research.errors import ConfigError

__all__ = ["MotionExtractor", "MotionExtractorOutput", "ConvNeXtV2Detector"]

LAYER_NORM_EPS = 1e-6
GRN_EPS = 1e-6


class MotionExtractorOutput(NamedTuple):
    """Raw head outputs, in the order of the official ONNX model's outputs.

    pitch, yaw, roll: (B, num_bins) bin logits; t: (B, 3); exp: (B, 3 * num_kp); scale: (B, 1);
    kp: (B, 3 * num_kp) canonical keypoints.
    """

    pitch: torch.Tensor
    yaw: torch.Tensor
    roll: torch.Tensor
    t: torch.Tensor
    exp: torch.Tensor
    scale: torch.Tensor
    kp: torch.Tensor


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor.

    Written out (mean, biased variance, ``(x - mean) / sqrt(var + eps)``) rather than permuting into
    ``F.layer_norm`` because that is the reference arithmetic; it runs only at the four resolution changes.
    """

    def __init__(self, num_channels: int, eps: float = LAYER_NORM_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        mean = x.mean(1, keepdim=True)
        centered = x - mean
        var = centered.pow(2).mean(1, keepdim=True)
        normed = centered / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * normed + self.bias[:, None, None]


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN on channels-last features: ``x + gamma * (x * N(x)) + beta``.

    N(x) is each channel's spatial L2 norm divided by the mean of those norms over channels.
    Parameters are stored as (1, 1, 1, C), as in the checkpoint.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, num_channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        spatial_norm = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        relative = spatial_norm / (spatial_norm.mean(dim=-1, keepdim=True) + GRN_EPS)
        return self.gamma * (x * relative) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """Residual block: depthwise 7x7 conv -> LayerNorm -> Linear(C, 4C) -> GELU -> GRN -> Linear(4C, C).

    Stochastic depth is a training-time regulariser and the identity in eval, so it is left out.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        y = self.dwconv(x).permute(0, 2, 3, 1)  # channels-last, so the 1x1 convs are Linear layers
        y = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2Detector(nn.Module):
    """ConvNeXt-V2 trunk with LivePortrait's seven regression heads.

    Stage i runs at 1/(4 * 2**i) of the input resolution with ``dims[i]`` channels. The stem is a 4x4
    stride-4 conv followed by LayerNorm; every later stage starts with LayerNorm + 2x2 stride-2 conv.
    Features are averaged over space, LayerNorm-ed, and fed to each head.
    """

    def __init__(
        self,
        num_kp: int,
        num_bins: int,
        in_channels: int,
        depths: Sequence[int],
        dims: Sequence[int],
    ) -> None:
        super().__init__()
        if len(depths) != len(dims) or not dims:
            raise ConfigError(
                f"motion extractor: depths {list(depths)} and dims {list(dims)} must be non-empty and "
                "have one entry per stage"
            )
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(
                nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4),
                ChannelsFirstLayerNorm(dims[0]),
            )
        )
        for dim_in, dim_out in zip(dims[:-1], dims[1:]):
            self.downsample_layers.append(
                nn.Sequential(
                    ChannelsFirstLayerNorm(dim_in),
                    nn.Conv2d(dim_in, dim_out, kernel_size=2, stride=2),
                )
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtV2Block(dim) for _ in range(depth))) for depth, dim in zip(depths, dims)
        )
        feat_dim = dims[-1]
        self.norm = nn.LayerNorm(feat_dim, eps=LAYER_NORM_EPS)
        self.fc_kp = nn.Linear(feat_dim, 3 * num_kp)
        self.fc_scale = nn.Linear(feat_dim, 1)
        self.fc_pitch = nn.Linear(feat_dim, num_bins)
        self.fc_yaw = nn.Linear(feat_dim, num_bins)
        self.fc_roll = nn.Linear(feat_dim, num_bins)
        self.fc_t = nn.Linear(feat_dim, 3)
        self.fc_exp = nn.Linear(feat_dim, 3 * num_kp)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) -> pooled, normalised features (B, dims[-1])."""
        x = image
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return self.norm(x.mean(dim=(-2, -1)))

    def forward(self, image: torch.Tensor) -> MotionExtractorOutput:
        """(B, in_channels, H, W) -> :class:`MotionExtractorOutput`."""
        feat = self.features(image)
        return MotionExtractorOutput(
            pitch=self.fc_pitch(feat),
            yaw=self.fc_yaw(feat),
            roll=self.fc_roll(feat),
            t=self.fc_t(feat),
            exp=self.fc_exp(feat),
            scale=self.fc_scale(feat),
            kp=self.fc_kp(feat),
        )


class MotionExtractor(nn.Module):
    """Head pose, translation, scale, expression offsets and canonical keypoints from a face crop.

    Defaults are the official hyper-parameters (ConvNeXt-V2 tiny, 21 keypoints, 66 pose bins). Narrower
    variants (for fast tests or distillation) only change ``depths`` / ``dims``.
    """

    def __init__(
        self,
        num_kp: int = 21,
        num_bins: int = 66,
        in_channels: int = 3,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
    ) -> None:
        super().__init__()
        self.num_kp = num_kp
        self.detector = ConvNeXtV2Detector(
            num_kp=num_kp, num_bins=num_bins, in_channels=in_channels, depths=depths, dims=dims
        )

    def forward(self, image: torch.Tensor) -> MotionExtractorOutput:
        """image (B, 3, 256, 256) RGB in [0, 1] -> raw outputs; exp and kp are (B, 3 * num_kp).

        The official model is trained on 256x256 crops; other sizes run too (strided convs floor odd sizes).
        """
        return self.detector(image)
