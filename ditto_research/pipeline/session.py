"""The Python API of offline generation (what the CLI uses).

    from ditto_research.pipeline import TalkingHeadSession
    session = TalkingHeadSession.from_overrides(["model=tiny"])
    result = session.generate("face.png", "speech.wav", "out.mp4")
    print(result.summary())

Stages (one thread each, bounded queues, see :mod:`ditto_research.pipeline.runner`; assembled by the
:class:`~ditto_research.pipeline.engine.Engine`)::

    audio ─► motion (HuBERT windows, conditions, LMDM windows, fuse, smooth) ─► stitch ─► warp ─► decode
          ─► paste back ─► writer (main thread: H.264 + AAC, temporary file renamed at the end)
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from omegaconf import DictConfig

from ditto_research.audio.io import load_audio, num_video_frames
from ditto_research.config import InferConfig, compose
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.errors import ConfigError
from ditto_research.motion.audio2motion import Audio2MotionSettings
from ditto_research.motion.conditions import ConditionBuilder
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.networks import Networks
from ditto_research.pipeline.observers import PipelineObserver, StageTimer
from ditto_research.pipeline.output import write_frames
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.pipeline.runner import PipelineRunner
from ditto_research.pipeline.stages import FrameImage


@dataclass
class RunResult:
    """What one generation did (the numbers benchmarks and the CLI summary report)."""

    output: Path | None
    frames: int
    seconds: float
    load_s: float
    register_s: float
    stage_ms_per_frame: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        where = f" -> {self.output}" if self.output else ""
        return f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.2f} fps){where}"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class TalkingHeadSession:
    """Offline generation on an :class:`~ditto_research.pipeline.engine.Engine`: as many videos as you like.

    Args:
        cfg: a composed config with ``mode=offline``, or an engine to share (any mode: the engine does not
            depend on it; e.g. the streaming session's).
    """

    def __init__(self, cfg: InferConfig | DictConfig | Engine) -> None:
        if not isinstance(cfg, Engine):
            engine = Engine(cfg)
            if engine.cfg.mode.name != "offline":
                raise ConfigError(
                    "TalkingHeadSession runs mode=offline; use the streaming API for mode=online"
                )
            cfg = engine
        self.engine = cfg
        self.cfg: InferConfig = cfg.cfg

    @classmethod
    def from_overrides(cls, overrides: list[str] | None = None) -> TalkingHeadSession:
        """Compose ``conf/infer.yaml`` with command-line style overrides (e.g. ``["model=tiny"]``)."""
        return cls(compose("infer", overrides))

    # ---- the engine's components (kept as attributes of the session for the documented API) -------------

    @property
    def device(self):
        return self.engine.device

    @property
    def networks(self) -> Networks:
        return self.engine.networks

    @property
    def encoder(self):
        return self.engine.encoder

    @property
    def frontend(self):
        return self.engine.frontend

    def close(self) -> None:
        self.engine.close()

    def register(
        self, source_path: str | Path, observers: Sequence[PipelineObserver] = ()
    ) -> RegisteredSource:
        """Load and register a portrait image or video (see :mod:`ditto_research.pipeline.registration`)."""
        return self.engine.register(source_path, observers)

    def generate_motion(self, audio: np.ndarray, source: RegisteredSource) -> np.ndarray:
        """(N, 265) motion for 16 kHz mono ``audio`` (N = ceil(seconds * 25)), as the reference computes
        it."""
        return self.engine.generate_motion(audio, source)

    def condition_builder(self, source: RegisteredSource) -> ConditionBuilder:
        return self.engine.condition_builder(source)

    def motion_settings(self, fuse_mode: Literal["offline", "online"] = "offline") -> Audio2MotionSettings:
        return self.engine.motion_settings(fuse_mode)

    def motion_value_range(self) -> np.ndarray | None:
        return self.engine.motion_value_range()

    # ---- generation ------------------------------------------------------------------------------------

    def frames(
        self, source: RegisteredSource, audio: np.ndarray, observers: Sequence[PipelineObserver] = ()
    ) -> Iterator[FrameImage]:
        """Rendered output frames in order, streamed through the threaded stages.

        ``observers`` see every generated motion row (``on_motion``) and every stage call (``on_stage_call``).
        Leaving the loop early cancels the run.
        """
        num_frames = num_video_frames(len(audio), SAMPLE_RATE, FPS)
        stages = self.engine.offline_stages(source, num_frames, observers)
        runner = PipelineRunner(stages, queue_size=4, observers=observers)
        yield from runner.iterate([audio])

    def generate(
        self,
        source_path: str | Path,
        audio_path: str | Path,
        output: str | Path | None,
        overwrite: bool | None = None,
        observers: Sequence[PipelineObserver] = (),
    ) -> RunResult:
        """Write the talking-head MP4 of ``source_path`` speaking ``audio_path`` to ``output`` (None: render
        without writing, e.g. to watch the frames through ``observers``)."""
        t0 = time.perf_counter()
        load_s = self.networks.load_s
        audio = load_audio(audio_path, SAMPLE_RATE)
        num_frames = num_video_frames(len(audio), SAMPLE_RATE, FPS)
        self.engine.check_speech_features(num_frames, str(audio_path))
        t_reg = time.perf_counter()
        source = self.register(source_path, observers)
        register_s = time.perf_counter() - t_reg
        timer = StageTimer()
        try:
            path, _ = write_frames(
                self.frames(source, audio, [timer, *observers]),
                output,
                audio_path,
                num_frames=num_frames,
                overwrite=self.cfg.overwrite if overwrite is None else overwrite,
                progress=self.cfg.progress,
            )
        finally:
            source.media.close()
        return RunResult(
            path,
            num_frames,
            time.perf_counter() - t0,
            load_s,
            register_s,
            timer.ms_per_frame(num_frames),
            peak_rss_mb(),
        )
