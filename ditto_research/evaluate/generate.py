"""Generate one clip while measuring it: the offline session or the online stream, behind one interface.

A :class:`ClipRenderer` holds one :class:`~ditto_research.pipeline.engine.Engine` (networks loaded once,
``load_s``) and turns a clip into a :class:`Generation`: the frames the metrics need (downscaled), a few
full-size sample frames, the generated (N, 265) motion, each stage's busy time, and the per-frame timing. It
watches the run through observers (motion rows, stage calls) and writes the MP4 through the sessions' own
write path (same writer, audio muxed), inside the timed region, so fps numbers match
``python -m ditto_research.infer``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ditto_research.audio.io import load_audio, num_video_frames
from ditto_research.config import InferConfig
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.evaluate.dataset import Clip
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.observers import MotionRecorder, StageTimer
from ditto_research.pipeline.online import StreamingSession
from ditto_research.pipeline.output import write_frames
from ditto_research.pipeline.session import TalkingHeadSession
from ditto_research.pipeline.stages import FrameImage

__all__ = ["ClipRenderer", "Generation", "make_renderer"]


@dataclass
class Generation:
    """What rendering one clip produced and how long each part took (seconds unless named otherwise)."""

    audio: np.ndarray  # (L,) float32 16 kHz, as the pipeline heard it
    frames: list[np.ndarray]  # (H', W', 3) uint8 RGB, longest side <= the metrics size
    samples: dict[int, np.ndarray]  # frame index -> full-size (H, W, 3) uint8 RGB
    motion: np.ndarray | None  # (N, 265)
    seconds: float  # audio load .. closed video
    register_s: float
    render_s: float  # first item into the pipeline .. last frame out
    emit_s: list[float]  # per frame: time it came out, from the start of rendering
    latency_s: list[float] = field(default_factory=list)  # online: per frame, out - its audio had arrived
    first_frame_s: float | None = None
    stage_calls: dict[str, list[float]] = field(default_factory=dict)
    stage_busy_s: dict[str, float] = field(default_factory=dict)
    video: Path | None = None

    @property
    def num_frames(self) -> int:
        return len(self.emit_s)


class _FrameCollector:
    """Keeps downscaled frames for the metrics and a few full-size samples, as frames stream out."""

    def __init__(self, num_frames: int, sample_count: int, max_size: int) -> None:
        count = min(sample_count, num_frames)
        self.sample_indices = (
            set(np.linspace(0, num_frames - 1, count).round().astype(int).tolist()) if count else set()
        )
        self.max_size = max_size
        self.frames: list[np.ndarray] = []
        self.samples: dict[int, np.ndarray] = {}

    def add(self, index: int, image: np.ndarray) -> None:
        if index in self.sample_indices:
            self.samples[index] = image
        h, w = image.shape[:2]
        scale = self.max_size / max(h, w)
        if scale < 1.0:
            image = cv2.resize(
                image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        self.frames.append(image)


class ClipRenderer:
    """One engine for one configuration, rendering clips one after the other (offline or online)."""

    def __init__(self, cfg: InferConfig) -> None:
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.load_s = self.engine.load()
        self.offline = TalkingHeadSession(self.engine)
        self.online = StreamingSession(self.engine)

    def render(self, clip: Clip, video: Path | None, sample_count: int, metrics_max_size: int) -> Generation:
        t0 = time.perf_counter()
        audio = load_audio(clip.audio, SAMPLE_RATE)
        num_frames = num_video_frames(len(audio), SAMPLE_RATE, FPS)
        collector = _FrameCollector(num_frames, sample_count, metrics_max_size)
        timer, motion = StageTimer(), MotionRecorder(num_frames)
        emit: list[float] = []
        start = 0.0

        def keep(frame: FrameImage) -> None:
            emit.append(time.perf_counter() - start)
            collector.add(frame.index, frame.image)

        online = self.cfg.mode.name == "online"
        if online:
            start = time.perf_counter()
            result = self.online.run_file(
                clip.source, clip.audio, video, overwrite=True, observers=[motion], on_frame=keep
            )
            register_s, render_s = result.register_s, time.perf_counter() - start - result.register_s
            latency = (
                self.online.frame_latencies().tolist()
            )  # hand-over time - when the frame's audio was pushed
            calls = {name: times.tolist() for name, times in self.online.stage_call_seconds().items()}
            busy = {name: ms * len(emit) / 1000.0 for name, ms in self.online.stage_ms_per_frame().items()}
            path, first_frame = result.output, (latency[0] if latency else None)
            emit = [t - result.register_s for t in emit]  # from the start of rendering
        else:
            t_reg = time.perf_counter()
            source = self.engine.register(clip.source)
            register_s = time.perf_counter() - t_reg
            try:
                start = time.perf_counter()
                path, _ = write_frames(
                    self.offline.frames(source, audio, [timer, motion]),
                    video,
                    clip.audio,
                    overwrite=True,
                    on_frame=keep,
                )
                render_s = time.perf_counter() - start
            finally:
                source.media.close()
            latency, first_frame = [], (emit[0] if emit else None)
            calls = {name: times.tolist() for name, times in timer.call_seconds().items()}
            busy = timer.busy_s()
        return Generation(
            audio=audio,
            frames=collector.frames,
            samples=collector.samples,
            motion=motion.array()[: len(emit)],
            seconds=time.perf_counter() - t0,
            register_s=register_s,
            render_s=render_s,
            emit_s=emit,
            latency_s=latency,
            first_frame_s=first_frame,
            stage_calls=calls,
            stage_busy_s=busy,
            video=path,
        )

    def close(self) -> None:
        self.online.release()


def make_renderer(cfg: InferConfig) -> ClipRenderer:
    """The renderer for ``cfg`` (loads the networks)."""
    return ClipRenderer(cfg)
