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

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from omegaconf import DictConfig

from ditto_research.config import PipelineConfig, compose
from ditto_research.errors import ConfigError
from ditto_research.memory import peak_rss_mb
from ditto_research.motion.audio2motion import Audio2MotionSettings
from ditto_research.motion.conditions import ConditionBuilder
from ditto_research.pipeline.clip import ClipReport, offline_frames, run_clip
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.networks import Networks
from ditto_research.pipeline.observers import PipelineObserver
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.pipeline.stages import FrameImage

__all__ = ["RunResult", "TalkingHeadSession", "peak_rss_mb"]


RunResult = ClipReport  # the report of generate, by its former name


class TalkingHeadSession:
    """Offline generation on an :class:`~ditto_research.pipeline.engine.Engine`: as many videos as you like.

    Args:
        cfg: a composed config with ``mode=offline``, or an engine to share (any mode: the engine does not
            depend on it; e.g. the streaming session's).
    """

    def __init__(self, cfg: PipelineConfig | DictConfig | Engine) -> None:
        if not isinstance(cfg, Engine):
            engine = Engine(cfg)
            if engine.cfg.mode.name != "offline":
                raise ConfigError(
                    "TalkingHeadSession runs mode=offline; use the streaming API for mode=online"
                )
            cfg = engine
        self.engine = cfg
        self.cfg: PipelineConfig = cfg.cfg

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
        return offline_frames(self.engine, source, audio, observers)

    def generate(
        self,
        source_path: str | Path,
        audio_path: str | Path,
        output: str | Path | None,
        overwrite: bool | None = None,
        observers: Sequence[PipelineObserver] = (),
    ) -> ClipReport:
        """Write the talking-head MP4 of ``source_path`` speaking ``audio_path`` to ``output`` (None: render
        without writing, e.g. to watch the frames through ``observers``).

        Returns the :class:`~ditto_research.pipeline.clip.ClipReport` of
        :func:`~ditto_research.pipeline.clip.run_clip` (the one run path of every clip; it defines the
        numbers).
        """
        return run_clip(
            self.engine, source_path, audio_path, output, overwrite=overwrite, observers=observers
        )
