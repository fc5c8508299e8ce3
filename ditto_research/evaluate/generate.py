"""Generate one clip while measuring it: the offline session or the online stream, behind one interface.

A :class:`ClipRenderer` owns the networks of one configuration (loaded once, ``load_s``) and turns a clip into
a :class:`Generation`: the frames the metrics need (downscaled), a few full-size sample frames, the generated
(N, 265) motion, each stage's busy time, and the per-frame timing. The MP4 is written as the CLI writes it
(same writer, audio muxed), inside the timed region, so fps numbers match ``python -m ditto_research.infer``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ditto_research.audio.io import load_audio, num_video_frames
from ditto_research.config import InferConfig
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.pipeline.session import TalkingHeadSession
from ditto_research.render.writer import VideoWriter
from ditto_research.evaluate.dataset import Clip

__all__ = ["ClipRenderer", "Generation", "RecordingSession", "make_renderer"]



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


class ClipRenderer(Protocol):
    """Networks of one configuration, rendering clips one after the other."""

    load_s: float

    def render(self, clip: Clip, video: Path | None, sample_count: int, metrics_max_size: int) -> Generation: ...

    def close(self) -> None: ...


class RecordingSession(TalkingHeadSession):
    """A :class:`TalkingHeadSession` that keeps the motion it generated last (for the motion statistics)."""

    def __init__(self, cfg: InferConfig) -> None:
        super().__init__(cfg)
        self.last_motion: np.ndarray | None = None

    def generate_motion(self, audio: np.ndarray, source: RegisteredSource) -> np.ndarray:
        motion = super().generate_motion(audio, source)
        self.last_motion = motion
        return motion

    def load(self) -> float:
        """Build networks, speech encoder and face front-end now; returns the seconds it took."""
        t0 = time.perf_counter()
        _ = self.networks, self.encoder, self.frontend
        return time.perf_counter() - t0


class _FrameCollector:
    """Keeps downscaled frames for the metrics and a few full-size samples, as frames stream out."""

    def __init__(self, num_frames: int, sample_count: int, max_size: int) -> None:
        count = min(sample_count, num_frames)
        self.sample_indices = set(np.linspace(0, num_frames - 1, count).round().astype(int).tolist()) if count else set()
        self.max_size = max_size
        self.frames: list[np.ndarray] = []
        self.samples: dict[int, np.ndarray] = {}

    def add(self, index: int, image: np.ndarray) -> None:
        if index in self.sample_indices:
            self.samples[index] = image
        h, w = image.shape[:2]
        scale = self.max_size / max(h, w)
        if scale < 1.0:
            image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
        self.frames.append(image)


class OfflineRenderer:
    """``mode=offline``: :class:`TalkingHeadSession`'s threaded stages."""

    def __init__(self, cfg: InferConfig) -> None:
        self.session = RecordingSession(cfg)
        self.load_s = self.session.load()

    def render(self, clip: Clip, video: Path | None, sample_count: int, metrics_max_size: int) -> Generation:
        session = self.session
        t0 = time.perf_counter()
        audio = load_audio(clip.audio, SAMPLE_RATE)
        num_frames = num_video_frames(len(audio), SAMPLE_RATE, FPS)
        t_reg = time.perf_counter()
        source = session.register(clip.source)
        register_s = time.perf_counter() - t_reg
        collector = _FrameCollector(num_frames, sample_count, metrics_max_size)
        emit: list[float] = []
        stats: dict = {}
        session.last_motion = None
        try:
            writer = VideoWriter(video, fps=FPS, overwrite=True) if video is not None else None
            try:
                start = time.perf_counter()
                for item in session.frames(source, audio, stats):
                    emit.append(time.perf_counter() - start)
                    collector.add(item.index, item.image)
                    if writer is not None:
                        writer.write(item.image)
                render_s = time.perf_counter() - start
                path = writer.close(clip.audio) if writer is not None else None
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
        finally:
            source.media.close()
        runner = stats["runner"]
        calls = {name: list(s.process_s) for name, s in runner.stats.items()}
        return Generation(
            audio=audio, frames=collector.frames, samples=collector.samples, motion=session.last_motion,
            seconds=time.perf_counter() - t0, register_s=register_s, render_s=render_s, emit_s=emit,
            first_frame_s=emit[0] if emit else None, stage_calls=calls,
            stage_busy_s={name: float(np.sum(v)) for name, v in calls.items()}, video=path,
        )

    def close(self) -> None:
        self.session.close()


class OnlineRenderer:
    """``mode=online``: :class:`~ditto_research.pipeline.online.StreamingSession`, fed like a live microphone
    (at 1x speed in 20 ms pieces when ``mode.realtime``, else in 1 s pieces as fast as it takes them)."""

    def __init__(self, cfg: InferConfig, streaming_session_class: type) -> None:
        self.cfg = cfg
        self.components = RecordingSession(replace(cfg, mode=replace(cfg.mode, name="offline")))
        self.load_s = self.components.load()
        self.stream = streaming_session_class(cfg, components=self.components)

    def render(self, clip: Clip, video: Path | None, sample_count: int, metrics_max_size: int) -> Generation:
        t0 = time.perf_counter()
        audio = load_audio(clip.audio, SAMPLE_RATE)
        num_frames = num_video_frames(len(audio), SAMPLE_RATE, FPS)
        t_reg = time.perf_counter()
        source = self.components.register(clip.source)
        register_s = time.perf_counter() - t_reg
        collector = _FrameCollector(num_frames, sample_count, metrics_max_size)
        motion = np.zeros((num_frames, 265), np.float32)
        emit: list[float] = []

        def keep_motion(index: int, row: np.ndarray) -> None:
            if 0 <= index < num_frames:
                motion[index] = row

        try:
            writer = VideoWriter(video, fps=FPS, overwrite=True) if video is not None else None
            try:
                start = time.perf_counter()
                self.stream.start(source, num_frames=num_frames, on_motion=keep_motion)
                feeder = threading.Thread(target=self.stream.feed, args=(audio, self.cfg.mode.realtime),
                                          name="eval-feeder", daemon=True)
                feeder.start()
                try:
                    for item in self.stream.frames():
                        emit.append(time.perf_counter() - start)
                        collector.add(item.index, item.image)
                        if writer is not None:
                            writer.write(item.image)
                finally:
                    feeder.join()
                render_s = time.perf_counter() - start
                path = writer.close(clip.audio) if writer is not None else None
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
        finally:
            source.media.close()
        latency = self.stream.frame_latencies().tolist()  # hand-over time - when the frame's audio was pushed
        busy_ms = self.stream.stage_ms_per_frame()
        calls = {name: times.tolist() for name, times in self.stream.stage_call_seconds().items()}
        return Generation(
            audio=audio, frames=collector.frames, samples=collector.samples, motion=motion[: len(emit)],
            seconds=time.perf_counter() - t0, register_s=register_s, render_s=render_s, emit_s=emit,
            latency_s=latency, first_frame_s=latency[0] if latency else None, stage_calls=calls,
            stage_busy_s={name: ms * len(emit) / 1000.0 for name, ms in busy_ms.items()}, video=path,
        )

    def close(self) -> None:
        self.stream.release()


def make_renderer(cfg: InferConfig) -> ClipRenderer:
    """The renderer for ``cfg.mode`` (loads the networks). ConfigError when the mode is not available."""
    if cfg.mode.name == "offline":
        return OfflineRenderer(cfg)
    from ditto_research.pipeline.online import StreamingSession

    return OnlineRenderer(cfg, StreamingSession)
