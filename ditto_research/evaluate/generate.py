"""Generate one clip while measuring it, offline or online, through the one run path of every clip.

A :class:`ClipRenderer` holds one :class:`~ditto_research.pipeline.engine.Engine` (networks loaded once,
``load_s``) and turns a clip into a :class:`Generation`: the :class:`~ditto_research.pipeline.clip.ClipReport`
of :func:`~ditto_research.pipeline.clip.run_clip` (timings defined once, the same numbers as
``python -m ditto_research.infer``), plus what the metrics need: the frames (downscaled), a few full-size
sample frames and the generated (N, 265) motion, collected through observers as the frames stream out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ditto_research.audio.io import load_audio, num_video_frames
from ditto_research.config import PipelineConfig
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.evaluate.dataset import Clip
from ditto_research.pipeline.clip import ClipReport, run_clip
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.observers import MotionRecorder
from ditto_research.pipeline.online import StreamingSession

__all__ = ["ClipRenderer", "Generation", "make_renderer"]


@dataclass
class Generation:
    """One rendered clip: its run report and what the metrics read."""

    report: ClipReport
    audio: np.ndarray  # (L,) float32 16 kHz, as the pipeline heard it
    frames: list[np.ndarray]  # (H', W', 3) uint8 RGB, longest side <= the metrics size
    samples: dict[int, np.ndarray]  # frame index -> full-size (H, W, 3) uint8 RGB
    motion: np.ndarray | None  # (N, 265)


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

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.load_s = self.engine.load()
        self.online = StreamingSession(self.engine) if cfg.mode.name == "online" else None

    def render(self, clip: Clip, video: Path | None, sample_count: int, metrics_max_size: int) -> Generation:
        audio = load_audio(clip.audio, SAMPLE_RATE)
        num_frames = num_video_frames(len(audio), SAMPLE_RATE, FPS)
        collector = _FrameCollector(num_frames, sample_count, metrics_max_size)
        motion = MotionRecorder(num_frames)
        report = run_clip(
            self.engine,
            clip.source,
            clip.audio,
            video,
            stream=self.online,
            samples=audio,
            overwrite=True,
            progress=False,
            observers=[motion],
            on_frame=lambda frame: collector.add(frame.index, frame.image),
        )
        return Generation(report, audio, collector.frames, collector.samples, motion.array()[: report.frames])

    def close(self) -> None:
        if self.online is not None:
            self.online.release()
        else:
            self.engine.close()


def make_renderer(cfg: PipelineConfig) -> ClipRenderer:
    """The renderer for ``cfg`` (loads the networks)."""
    return ClipRenderer(cfg)
