"""The per-frame render stages and the items that flow between them.

    FrameMotion ─stitch─► FrameKeypoints ─warp─► FrameFeature ─decode─► FrameRender ─paste─► FrameImage

Each stage is a plain object (setup / process / flush / close) run by
:class:`~ditto_research.pipeline.runner.PipelineRunner`; items are small frozen dataclasses carrying the output
frame index, its timestamp and the source frame it is rendered from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ditto_research.constants import FPS
from ditto_research.motion.stitch import FrameControls, MotionStitcher
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.pipeline.runner import BaseStage
from ditto_research.render.putback import PasteBack



@dataclass(frozen=True)
class FrameMotion:
    """Generated motion of output frame ``index`` (a reference x_d_info dict of (1, width) arrays)."""

    index: int
    x_d_info: Mapping[str, np.ndarray]

    @property
    def timestamp_s(self) -> float:
        return self.index / FPS


@dataclass(frozen=True)
class FrameKeypoints:
    index: int
    source_index: int
    x_s: torch.Tensor  # (1, 21, 3)
    x_d: torch.Tensor  # (1, 21, 3)


@dataclass(frozen=True)
class FrameFeature:
    index: int
    source_index: int
    feature: torch.Tensor  # (1, 256, 64, 64)


@dataclass(frozen=True)
class FrameRender:
    index: int
    source_index: int
    image: np.ndarray  # (512, 512, 3) float32 in [0, 255]


@dataclass(frozen=True)
class FrameImage:
    """A finished output frame: (H, W, 3) uint8 RGB at ``timestamp_s``."""

    index: int
    image: np.ndarray

    @property
    def timestamp_s(self) -> float:
        return self.index / FPS


def source_index(index: int, num_source_frames: int) -> int:
    """Mirror-loop a video source over the output (0, 1, .., n-1, n-1, .., 0, 0, 1, ..)."""
    turn, offset = divmod(index, num_source_frames)
    return offset if turn % 2 == 0 else num_source_frames - 1 - offset


class _TorchStage(BaseStage):
    """Sets the stage thread's torch intra-op threads (0: leave the process default)."""

    def __init__(self, num_threads: int = 0) -> None:
        self.num_threads = num_threads

    def setup(self) -> None:
        if self.num_threads > 0:
            torch.set_num_threads(self.num_threads)


class StitchStage(_TorchStage):
    """Generated motion + source keypoint info + controls -> the warp's (x_s, x_d)."""

    name = "stitch"

    def __init__(self, stitcher: MotionStitcher, source: RegisteredSource,
                 controls: Mapping[int, FrameControls], device: torch.device | str = "cpu", num_threads: int = 0) -> None:
        super().__init__(num_threads)
        self.stitcher, self.source, self.controls, self.device = stitcher, source, controls, device

    def process(self, item: FrameMotion) -> Iterator[FrameKeypoints]:
        src = source_index(item.index, len(self.source))
        with torch.no_grad():
            x_s, x_d = self.stitcher(self.source.frames[src].x_s_info, item.x_d_info, self.controls.get(item.index))
        yield FrameKeypoints(item.index, src, torch.from_numpy(x_s).to(self.device), torch.from_numpy(x_d).to(self.device))


class WarpStage(_TorchStage):
    """Warp the source appearance volume by the keypoint motion: (1, 256, 64, 64) features."""

    name = "warp"

    def __init__(self, warp_network: nn.Module, source: RegisteredSource, num_threads: int = 0) -> None:
        super().__init__(num_threads)
        self.net, self.source = warp_network, source

    @torch.no_grad()
    def process(self, item: FrameKeypoints) -> Iterator[FrameFeature]:
        f_s = self.source.appearance.get(item.source_index)
        yield FrameFeature(item.index, item.source_index, self.net(f_s, item.x_s, item.x_d))


class DecodeStage(_TorchStage):
    """SPADE decoder: features -> (512, 512, 3) float32 image in [0, 255] (the reference post-processing)."""

    name = "decode"

    def __init__(self, decoder: nn.Module, num_threads: int = 0) -> None:
        super().__init__(num_threads)
        self.net = decoder

    @torch.no_grad()
    def process(self, item: FrameFeature) -> Iterator[FrameRender]:
        out = self.net(item.feature)[0].float().clamp_(0, 1).mul_(255).permute(1, 2, 0)
        yield FrameRender(item.index, item.source_index, np.ascontiguousarray(out.cpu().numpy()))


class PasteStage(BaseStage):
    """Blend the render into its source frame with the feathered mask."""

    name = "paste"

    def __init__(self, source: RegisteredSource) -> None:
        self.source = source
        self.paste = PasteBack()

    def process(self, item: FrameRender) -> Iterable[FrameImage]:
        frame = self.source.media.frame(item.source_index)
        yield FrameImage(item.index, self.paste(frame, item.image, self.source.frames[item.source_index].M_c2o))
