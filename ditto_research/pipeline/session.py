"""The Python API of offline generation (what the CLI uses).

    from ditto_research.pipeline import TalkingHeadSession
    session = TalkingHeadSession.from_overrides(["model=tiny"])
    result = session.generate("face.png", "speech.wav", "out.mp4")
    print(result.summary())

Stages (one thread each, bounded queues, see :mod:`ditto_research.pipeline.runner`)::

    audio ─► motion (HuBERT windows, conditions, LMDM windows, fuse, smooth) ─► stitch ─► warp ─► decode
          ─► paste back ─► writer (main thread: H.264 + AAC, temporary file renamed at the end)
"""

from __future__ import annotations

import logging
import math
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from ditto_research.audio.encoders import make_encoder
from ditto_research.audio.features import offline_features
from ditto_research.audio.io import load_audio
from ditto_research.checkpoints import HUBERT_FILE, CheckpointRoot
from ditto_research.config import InferConfig, compose, to_config
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.errors import ConfigError, InputError
from ditto_research.face.frontend import make_frontend
from ditto_research.motion.audio2motion import Audio2MotionSettings, generate_motion_offline
from ditto_research.motion.conditions import ConditionBuilder, ConditionFlags
from ditto_research.motion.format import MotionInfo, clip_motion, source_motion_vector
from ditto_research.pipeline.controls import build_frame_controls, build_stitcher
from ditto_research.pipeline.networks import Networks, build_networks, build_window_sampler
from ditto_research.pipeline.registration import RegisteredSource, register_source
from ditto_research.pipeline.runner import BaseStage, PipelineRunner
from ditto_research.pipeline.stages import (
    DecodeStage,
    FrameImage,
    FrameMotion,
    PasteStage,
    StitchStage,
    WarpStage,
)
from ditto_research.render.source_io import load_source
from ditto_research.render.writer import VideoWriter

log = logging.getLogger(__name__)


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


class MotionStage(BaseStage):
    """Whole-clip audio -> per-frame generated motion (offline: every window is known up front)."""

    name = "motion"

    def __init__(self, session: TalkingHeadSession, source: RegisteredSource) -> None:
        self.session, self.source = session, source

    def process(self, audio: np.ndarray) -> Iterator[FrameMotion]:
        motion = self.session.generate_motion(audio, self.source)
        info = MotionInfo.from_array(motion)
        for i in range(len(info)):
            yield FrameMotion(i, info.frame(i))


class TalkingHeadSession:
    """Networks, speech encoder and face front-end for one configuration; generate as many videos as you like."""

    def __init__(self, cfg: InferConfig | DictConfig) -> None:
        self.cfg: InferConfig = cfg if isinstance(cfg, InferConfig) else to_config(cfg)
        if self.cfg.mode.name != "offline":
            raise ConfigError("TalkingHeadSession runs mode=offline; use the streaming API for mode=online")
        if self.cfg.backend.device == "cuda" and self.cfg.backend.name == "pytorch" and not torch.cuda.is_available():
            raise ConfigError("backend.device=cuda but no CUDA device is available; use backend.device=cpu")
        self.device = torch.device(self.cfg.backend.device)
        self.root = CheckpointRoot(Path(self.cfg.model.checkpoint_root))
        self._networks: Networks | None = None
        self._encoder = None
        self._frontend = None

    @classmethod
    def from_overrides(cls, overrides: list[str] | None = None) -> TalkingHeadSession:
        """Compose ``conf/infer.yaml`` with command-line style overrides (e.g. ``["model=tiny"]``)."""
        return cls(compose("infer", overrides))

    # ------------------------------------------------------------------------------------------ components

    @property
    def networks(self) -> Networks:
        if self._networks is None:
            self._networks = build_networks(self.cfg.model, self.cfg.motion, self.device, self.cfg.backend)
        return self._networks

    @property
    def encoder(self):
        if self._encoder is None:
            enc, name = self.cfg.audio_encoder, self.cfg.audio_encoder_name
            path = enc.path
            if name == "hubert_onnx" and path is None:
                path = str(self.root.aux_path(HUBERT_FILE))
            self._encoder = make_encoder(name, path, enc.seed, self.cfg.backend.device)
        return self._encoder

    @property
    def frontend(self):
        if self._frontend is None:
            self._frontend = make_frontend(self.cfg.face.name, self.root.aux_dir, self.cfg.face.min_face_size)
        return self._frontend

    def close(self) -> None:
        if self._frontend is not None:
            self._frontend.close()
            self._frontend = None

    # ----------------------------------------------------------------------------------------------- steps

    def register(self, source_path: str | Path) -> RegisteredSource:
        """Load and register a portrait image or video (see :mod:`ditto_research.pipeline.registration`)."""
        face = self.cfg.face
        media = load_source(source_path, max_size=face.max_size, n_frames=face.template_n_frames)
        nets = self.networks
        try:
            return register_source(media, self.frontend, nets.motion_extractor, nets.appearance_extractor, face,
                                   self.device, what=Path(source_path).name, progress=self.cfg.progress)
        except BaseException:
            media.close()
            raise

    def generate_motion(self, audio: np.ndarray, source: RegisteredSource) -> np.ndarray:
        """(N, 265) motion for 16 kHz mono ``audio`` (N = ceil(seconds * 25)), as the reference computes it."""
        cfg = self.cfg
        num_frames = math.ceil(len(audio) / SAMPLE_RATE * FPS)
        feats = offline_features(audio, self.encoder, tuple(cfg.mode.chunksize))[:num_frames]
        conds = self.condition_builder(source)(feats, 0)
        sampler = build_window_sampler(self.networks.lmdm, cfg.sampler, cfg.control.seed, self.device)
        source_motion = source_motion_vector(source.frames[0].x_s_info)
        motion = generate_motion_offline(torch.from_numpy(conds), sampler, source_motion, self.motion_settings(),
                                         self.device)
        return clip_motion(motion, self.motion_value_range())

    def condition_builder(self, source: RegisteredSource) -> ConditionBuilder:
        """The LMDM condition builder for ``source``: the config's condition flags, emotion and eye settings."""
        motion, control = self.cfg.motion, self.cfg.control
        builder = ConditionBuilder(ConditionFlags(motion.use_emo, motion.use_sc, motion.use_eye_open, motion.use_eye_ball))
        builder.setup(
            sc=source.sc,
            eye_open=np.concatenate([f.eye_open for f in source.frames]),
            eye_ball=np.concatenate([f.eye_ball for f in source.frames]),
            emotion=load_emotion(control.emo),
            eye_f0_mode=control.eye_f0_mode,
        )
        return builder

    def motion_settings(self, fuse_mode: Literal["offline", "online"] = "offline") -> Audio2MotionSettings:
        """LMDM windowing, fusing and smoothing from ``cfg.motion`` (``fuse_mode="online"`` for streams)."""
        motion = self.cfg.motion
        return Audio2MotionSettings(
            seq_frames=motion.seq_frames,
            overlap_v2=motion.overlap_v2,
            fix_kp_cond=motion.fix_kp_cond,
            fix_kp_cond_dim=tuple(motion.fix_kp_cond_dim) if motion.fix_kp_cond_dim else None,
            smo_k_d=motion.smo_k_d,
            fuse_mode=fuse_mode,
        )

    def motion_value_range(self) -> np.ndarray | None:
        """(2, 265) clip range of generated motion (``motion.v_min_max_for_clip``), or None."""
        path = self.cfg.motion.v_min_max_for_clip
        return np.load(path) if path else None

    def frames(self, source: RegisteredSource, audio: np.ndarray, stats: dict | None = None) -> Iterator[FrameImage]:
        """Rendered output frames in order, streamed through the threaded stages."""
        num_frames = math.ceil(len(audio) / SAMPLE_RATE * FPS)
        nets = self.networks
        stitcher = build_stitcher(self.cfg.control, nets.stitch_network, source, num_frames)
        controls = build_frame_controls(self.cfg.control, num_frames)
        threads = self.cfg.backend.num_threads
        stages = [
            MotionStage(self, source),
            StitchStage(stitcher, source, controls, self.device),
            WarpStage(nets.warp_network, source, threads),
            DecodeStage(nets.decoder, threads),
            PasteStage(source),
        ]
        runner = PipelineRunner(stages, queue_size=4)
        if stats is not None:
            stats["runner"] = runner
        yield from runner.iterate([audio])

    def generate(self, source_path: str | Path, audio_path: str | Path, output: str | Path,
                 overwrite: bool | None = None) -> RunResult:
        """Write the talking-head MP4 of ``source_path`` speaking ``audio_path`` to ``output``."""
        t0 = time.perf_counter()
        load_s = self.networks.load_s
        audio = load_audio(audio_path, SAMPLE_RATE)
        t_reg = time.perf_counter()
        source = self.register(source_path)
        register_s = time.perf_counter() - t_reg
        num_frames = math.ceil(len(audio) / SAMPLE_RATE * FPS)
        writer = VideoWriter(output, fps=FPS, overwrite=self.cfg.overwrite if overwrite is None else overwrite)
        stats: dict = {}
        try:
            with tqdm(total=num_frames, desc="render", unit="frame", disable=not self.cfg.progress) as bar:
                for item in self.frames(source, audio, stats):
                    writer.write(item.image)
                    bar.update()
            path = writer.close(audio_path)
        except BaseException:
            writer.abort()
            raise
        finally:
            source.media.close()
        runner = stats["runner"]
        per_stage = {
            name: 1000.0 * float(np.sum(s.process_s)) / max(num_frames, 1) for name, s in runner.stats.items()
        }
        return RunResult(path, num_frames, time.perf_counter() - t0, load_s, register_s, per_stage, peak_rss_mb())


def load_emotion(emo: object) -> object:
    """The control.emo value: an int / list as is, or a path to an (N, 8) .npy array."""
    if isinstance(emo, str) and emo.endswith(".npy"):
        path = Path(emo)
        if not path.is_file():
            raise InputError(f"control.emo file {emo} does not exist; give an int 0..7, a list, or an (N, 8) .npy")
        return np.load(path)
    return emo
