"""Every pipeline stage and the items that flow between them (the engine assembles them per mode).

    offline:  audio ─motion─► FrameMotion ...
    online:   AudioPiece ─features─► FeatureRows ... AudioEnded ─motion─► DriveReference, FrameMotion ...
    both:     FrameMotion ─stitch─► FrameKeypoints ─warp─► FeatureBatch ─decode─► RenderBatch
                ─paste─► FrameImage           (offline: warp and decode take render.batch_size frames a call)

Each stage is a plain object (setup / process / flush / close) run by
:class:`~ditto_research.pipeline.runner.PipelineRunner`; items are small frozen dataclasses carrying the
output frame index, its timestamp and the source frame it is rendered from.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ditto_research.audio.io import num_video_frames
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.media.loop import mirror_index
from ditto_research.motion.format import MotionInfo
from ditto_research.motion.online import OnlineMotionGenerator
from ditto_research.motion.stitch import FrameControls, MotionStitcher
from ditto_research.pipeline.observers import PipelineObserver, notify, notify_motion
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.pipeline.runner import BaseStage
from ditto_research.render.device_paste import DevicePasteBack
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
class FeatureBatch:
    """Warped features of consecutive frames ``indices`` (one or a render batch), on the run's device."""

    indices: tuple[int, ...]
    source_indices: tuple[int, ...]
    features: torch.Tensor  # (B, 256, 64, 64)


@dataclass(frozen=True)
class RenderBatch:
    """Decoded crops of frames ``indices``, on the run's device."""

    indices: tuple[int, ...]
    source_indices: tuple[int, ...]
    images: torch.Tensor  # (B, 3, 512, 512) float32 in [0, 255] (the reference post-processing)


@dataclass(frozen=True)
class FrameImage:
    """A finished output frame: (H, W, 3) uint8 RGB at ``timestamp_s``."""

    index: int
    image: np.ndarray

    @property
    def timestamp_s(self) -> float:
        return self.index / FPS


def source_index(index: int, num_source_frames: int) -> int:
    """Deprecated: :func:`ditto_research.media.loop.mirror_index` (the one mirror-loop rule)."""
    warnings.warn(
        "ditto_research.pipeline.stages.source_index moved to ditto_research.media.loop.mirror_index",
        DeprecationWarning,
        stacklevel=2,
    )
    return mirror_index(index, num_source_frames)


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
        src = mirror_index(item.index, len(self.source))
        with torch.no_grad():
            x_s, x_d = self.stitcher(
                self.source.frames[src].x_s_info, item.x_d_info, self.controls.get(item.index)
            )
        notify(self.observers, "on_keypoints", item.index, x_s, x_d)
        yield FrameKeypoints(
            item.index, src, torch.from_numpy(x_s).to(self.device), torch.from_numpy(x_d).to(self.device)
        )


class _BatchingStage(_TorchStage):
    """Collects :class:`FrameKeypoints` into batches of ``batch_size`` consecutive frames (the last one may
    be shorter) and hands each to :meth:`run_batch`."""

    def __init__(self, source: RegisteredSource, batch_size: int, num_threads: int) -> None:
        super().__init__(num_threads)
        self.source, self.batch_size = source, max(1, batch_size)
        self._pending: list[FrameKeypoints] = []

    def process(self, item: FrameKeypoints) -> Iterator[FeatureBatch | RenderBatch]:
        self._pending.append(item)
        if len(self._pending) >= self.batch_size:
            yield self._take()

    def flush(self) -> Iterator[FeatureBatch | RenderBatch]:
        if self._pending:
            yield self._take()

    def _take(self) -> FeatureBatch | RenderBatch:
        items, self._pending = self._pending, []
        with torch.no_grad():
            return self.run_batch(
                tuple(i.index for i in items),
                tuple(i.source_index for i in items),
                *stack_keypoints(self.source, items),
            )

    def run_batch(
        self,
        indices: tuple[int, ...],
        source_indices: tuple[int, ...],
        f_s: torch.Tensor,
        x_s: torch.Tensor,
        x_d: torch.Tensor,
    ) -> FeatureBatch | RenderBatch:
        raise NotImplementedError


def stack_keypoints(
    source: RegisteredSource, items: Sequence[FrameKeypoints]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(f_s (B, 32, 16, 64, 64), x_s (B, 21, 3), x_d (B, 21, 3)) of a batch; a still source's one appearance
    volume is expanded (no copy)."""
    volumes = [source.appearance.get(item.source_index) for item in items]
    if all(v is volumes[0] for v in volumes):
        f_s = volumes[0].expand(len(items), *volumes[0].shape[1:])
    else:
        f_s = torch.cat(volumes)
    x_s = torch.cat([item.x_s for item in items])
    x_d = torch.cat([item.x_d for item in items])
    return f_s, x_s, x_d


class WarpStage(_BatchingStage):
    """Warp the source appearance volume by the keypoint motion: (B, 256, 64, 64) features per batch of
    ``batch_size`` frames (offline; streams use 1)."""

    name = "warp"

    def __init__(
        self,
        warp_network: nn.Module,
        source: RegisteredSource,
        num_threads: int = 0,
        observers: Sequence[PipelineObserver] = (),
        batch_size: int = 1,
    ) -> None:
        super().__init__(source, batch_size, num_threads)
        self.net, self.observers = warp_network, observers

    def run_batch(
        self,
        indices: tuple[int, ...],
        source_indices: tuple[int, ...],
        f_s: torch.Tensor,
        x_s: torch.Tensor,
        x_d: torch.Tensor,
    ) -> FeatureBatch:
        features = self.net(f_s, x_s, x_d)
        for row, index in enumerate(indices):
            notify(self.observers, "on_warp", index, features[row : row + 1])
        return FeatureBatch(indices, source_indices, features)


def to_image(output: torch.Tensor) -> torch.Tensor:
    """Decoder output (B, 3, S, S) in (0, 1) -> float32 in [0, 255] (the reference post-processing)."""
    return output.float().clamp_(0, 1).mul_(255)


class DecodeStage(_TorchStage):
    """SPADE decoder: a batch of features -> (B, 3, 512, 512) float32 images in [0, 255] on the device."""

    name = "decode"

    def __init__(
        self, decoder: nn.Module, num_threads: int = 0, observers: Sequence[PipelineObserver] = ()
    ) -> None:
        super().__init__(num_threads)
        self.net, self.observers = decoder, observers

    @torch.no_grad()
    def process(self, item: FeatureBatch) -> Iterator[RenderBatch]:
        images = to_image(self.net(item.features))
        notify_renders(self.observers, item.indices, images)
        yield RenderBatch(item.indices, item.source_indices, images)


def notify_renders(
    observers: Sequence[PipelineObserver], indices: Sequence[int], images: torch.Tensor
) -> None:
    """``on_render`` with each (512, 512, 3) float32 image (copied to the host only when someone watches)."""
    if not observers:
        return
    for row, index in enumerate(indices):
        notify(observers, "on_render", index, host_image(images[row]))


def host_image(image: torch.Tensor) -> np.ndarray:
    """(3, S, S) render on the device -> (S, S, 3) float32 array on the host."""
    return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())


class PasteStage(BaseStage):
    """Blend each render into its source frame with the feathered mask: ``paste="exact"`` on the host
    (OpenCV 5.0's warp, the reference's frames bit for bit), ``"device"`` on the run's device (torch; only the
    finished uint8 frame is copied out, through a pinned buffer)."""

    name = "paste"

    def __init__(
        self, source: RegisteredSource, paste: str = "exact", device: torch.device | str = "cpu"
    ) -> None:
        self.source = source
        self.paste = PasteBack() if paste == "exact" else None
        self.device_paste = DevicePasteBack(device) if paste == "device" else None
        self._pinned: dict[tuple[int, ...], torch.Tensor] = {}

    def process(self, item: RenderBatch) -> Iterator[FrameImage]:
        for row, (index, src) in enumerate(zip(item.indices, item.source_indices)):
            frame = self.source.media.frame(src)
            M_c2o = self.source.frames[src].M_c2o
            if self.device_paste is None:
                yield FrameImage(index, self.paste(frame, host_image(item.images[row]), M_c2o))
            else:
                pasted = self.device_paste(self.device_paste.frame(src, frame), item.images[row], M_c2o)
                yield FrameImage(index, self._to_host(pasted))

    def _to_host(self, frame: torch.Tensor) -> np.ndarray:
        """The uint8 frame on the host: a non-blocking copy into a pinned buffer on CUDA, then one memcpy into
        the array handed on (the pinned buffer is reused)."""
        if frame.device.type != "cuda":
            return frame.numpy()
        pinned = self._pinned.get(tuple(frame.shape))
        if pinned is None:
            pinned = self._pinned[tuple(frame.shape)] = torch.empty(
                frame.shape, dtype=torch.uint8, pin_memory=True
            )
        pinned.copy_(frame, non_blocking=True)
        torch.cuda.current_stream(frame.device).synchronize()
        return pinned.numpy().copy()
