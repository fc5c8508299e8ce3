"""Every pipeline stage and the items that flow between them (the engine assembles them per mode).

    offline:  audio ─motion─► FrameMotion ...
    online:   AudioPiece ─features─► FeatureRows ... AudioEnded ─motion─► DriveReference, FrameMotion ...
    both:     FrameMotion ─stitch─► FrameKeypoints ─warp─► FrameFeature ─decode─► FrameRender
                ─paste─► FrameImage

Each stage is a plain object (setup / process / flush / close) run by
:class:`~ditto_research.pipeline.runner.PipelineRunner`; items are small frozen dataclasses carrying the
output frame index, its timestamp and the source frame it is rendered from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ditto_research.audio.io import num_video_frames
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.motion.format import MotionInfo
from ditto_research.motion.online import OnlineMotionGenerator
from ditto_research.motion.stitch import FrameControls, MotionStitcher
from ditto_research.pipeline.observers import PipelineObserver, notify, notify_motion
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.pipeline.runner import BaseStage
from ditto_research.render.putback import PasteBack

# ---- items ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioPiece:
    """Samples as pushed: (n,) float32 at 16 kHz."""

    samples: np.ndarray


@dataclass(frozen=True)
class FeatureRows:
    """(n, D) audio-feature rows of consecutive frames (one HuBERT chunk's ``current`` frames)."""

    rows: np.ndarray


@dataclass(frozen=True)
class AudioEnded:
    """The stream's audio is complete: ``num_samples`` in all; ``tail`` = (n, D) rows of the zero-padded
    last chunks (they may cover frames past the audio, so they go to ``finish``, never to ``push``)."""

    num_samples: int
    tail: np.ndarray | None = None


@dataclass(frozen=True)
class DriveReference:
    """d0, the first generated frame: the stitcher drives relative to it (``{key: (1, width)}``)."""

    x_d_info: dict[str, np.ndarray]


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


# ---- motion -----------------------------------------------------------------------------------------------


class MotionStage(BaseStage):
    """Offline: the whole clip's audio -> per-frame generated motion (every window is known up front)."""

    name = "motion"

    def __init__(
        self, generate: Callable[[np.ndarray], np.ndarray], observers: Sequence[PipelineObserver] = ()
    ) -> None:
        self.generate, self.observers = generate, observers

    def process(self, audio: np.ndarray) -> Iterator[FrameMotion]:
        motion = self.generate(audio)
        info = MotionInfo.from_array(motion)
        for i in range(len(info)):
            notify_motion(self.observers, i, motion[i])
            yield FrameMotion(i, info.frame(i))


class FeatureStream(Protocol):
    """Online speech features: ``push(samples)`` / ``flush()`` -> lists of (current, D) rows."""

    def push(self, samples: np.ndarray) -> list[np.ndarray]: ...

    def flush(self) -> list[np.ndarray]: ...


class FeatureStage(BaseStage):
    """Online: pushed samples -> speech feature rows (the reference chunks: lead-in zeros, 6480-sample
    windows; :class:`~ditto_research.audio.features.OnlineFeatureStream` or precomputed rows)."""

    name = "features"

    def __init__(self, stream: FeatureStream) -> None:
        self.stream = stream
        self.num_samples = 0

    def process(self, item: AudioPiece) -> Iterator[FeatureRows]:
        self.num_samples += item.samples.shape[0]
        for rows in self.stream.push(item.samples):
            yield FeatureRows(rows)

    def flush(self) -> Iterator[AudioEnded]:
        tail = self.stream.flush() if self.num_samples else []
        yield AudioEnded(self.num_samples, np.concatenate(tail) if tail else None)


class OnlineMotionStage(BaseStage):
    """Online: feature rows -> per-frame generated motion, first sending d0 to the stitcher."""

    name = "motion"

    def __init__(self, generator: OnlineMotionGenerator, observers: Sequence[PipelineObserver] = ()) -> None:
        self.generator, self.observers = generator, observers
        self._sent_d0 = False

    def process(self, item: FeatureRows | AudioEnded) -> Iterator[FrameMotion | DriveReference]:
        first = self.generator.frames_emitted
        if isinstance(item, AudioEnded):
            rows = self.generator.finish(num_video_frames(item.num_samples, SAMPLE_RATE, FPS), item.tail)
        else:
            rows = self.generator.push(item.rows)
        if not self._sent_d0 and self.generator.d0 is not None:
            self._sent_d0 = True
            yield DriveReference(MotionInfo.from_array(self.generator.d0).frame(0))
        for offset, row in enumerate(rows):
            notify_motion(self.observers, first + offset, row)
            yield FrameMotion(first + offset, MotionInfo.from_array(row).frame(0))


# ---- render -----------------------------------------------------------------------------------------------


class StitchStage(_TorchStage):
    """Generated motion + source keypoint info + controls -> the warp's (x_s, x_d).

    A :class:`DriveReference` (online streams) sets the stitcher's d0 (the reference sets
    ``motion_stitch.d0``); offline the stitcher takes d0 from the first frame itself.
    """

    name = "stitch"

    def __init__(
        self,
        stitcher: MotionStitcher,
        source: RegisteredSource,
        controls: Mapping[int, FrameControls],
        device: torch.device | str = "cpu",
        num_threads: int = 0,
        observers: Sequence[PipelineObserver] = (),
    ) -> None:
        super().__init__(num_threads)
        self.stitcher, self.source, self.controls, self.device = stitcher, source, controls, device
        self.observers = observers

    def process(self, item: FrameMotion | DriveReference) -> Iterator[FrameKeypoints]:
        if isinstance(item, DriveReference):
            self.stitcher.set_d0(item.x_d_info)
            return
        src = source_index(item.index, len(self.source))
        with torch.no_grad():
            x_s, x_d = self.stitcher(
                self.source.frames[src].x_s_info, item.x_d_info, self.controls.get(item.index)
            )
        notify(self.observers, "on_keypoints", item.index, x_s, x_d)
        yield FrameKeypoints(
            item.index, src, torch.from_numpy(x_s).to(self.device), torch.from_numpy(x_d).to(self.device)
        )


class WarpStage(_TorchStage):
    """Warp the source appearance volume by the keypoint motion: (1, 256, 64, 64) features."""

    name = "warp"

    def __init__(
        self,
        warp_network: nn.Module,
        source: RegisteredSource,
        num_threads: int = 0,
        observers: Sequence[PipelineObserver] = (),
    ) -> None:
        super().__init__(num_threads)
        self.net, self.source, self.observers = warp_network, source, observers

    @torch.no_grad()
    def process(self, item: FrameKeypoints) -> Iterator[FrameFeature]:
        f_s = self.source.appearance.get(item.source_index)
        feature = self.net(f_s, item.x_s, item.x_d)
        notify(self.observers, "on_warp", item.index, feature)
        yield FrameFeature(item.index, item.source_index, feature)


class DecodeStage(_TorchStage):
    """SPADE decoder: features -> (512, 512, 3) float32 image in [0, 255] (the reference post-processing)."""

    name = "decode"

    def __init__(
        self, decoder: nn.Module, num_threads: int = 0, observers: Sequence[PipelineObserver] = ()
    ) -> None:
        super().__init__(num_threads)
        self.net, self.observers = decoder, observers

    @torch.no_grad()
    def process(self, item: FrameFeature) -> Iterator[FrameRender]:
        out = self.net(item.feature)[0].float().clamp_(0, 1).mul_(255).permute(1, 2, 0)
        image = np.ascontiguousarray(out.cpu().numpy())
        notify(self.observers, "on_render", item.index, image)
        yield FrameRender(item.index, item.source_index, image)


class PasteStage(BaseStage):
    """Blend the render into its source frame with the feathered mask."""

    name = "paste"

    def __init__(self, source: RegisteredSource) -> None:
        self.source = source
        self.paste = PasteBack()

    def process(self, item: FrameRender) -> Iterable[FrameImage]:
        frame = self.source.media.frame(item.source_index)
        yield FrameImage(
            item.index, self.paste(frame, item.image, self.source.frames[item.source_index].M_c2o)
        )
