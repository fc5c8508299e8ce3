"""The engine: everything one configuration needs, built once; every session is a thin client of it.

    engine = Engine.from_overrides(["model=tiny"])
    TalkingHeadSession(engine)      # offline: whole clips to MP4 / frames
    StreamingSession(engine)        # online: pushed audio chunks to frames
    # the evaluation app and the live server hold one engine and open sessions on it

It owns the networks (always through the backend layer), the speech encoder, the face front-end, the
LMDM condition builder, the motion settings, and the stages of each mode (built here and nowhere else).
Networks, encoder and front-end are built lazily on first use (or all at once by :meth:`Engine.load`), under a
lock, so several sessions on several threads share one copy. Per-stream state (samplers and their noise, the
stitcher, the online motion state) is made fresh for each run from ``control.seed``: two runs of the same
inputs give the same frames.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from omegaconf import DictConfig

from ditto_research.audio.encoders import SpeechEncoder, make_encoder
from ditto_research.audio.features import OnlineFeatureStream, offline_features
from ditto_research.audio.io import num_video_frames
from ditto_research.audio.precomputed import PrecomputedFeatures, PrecomputedFeatureStream
from ditto_research.checkpoints import HUBERT_FILE, CheckpointRoot
from ditto_research.config import PipelineConfig, compose, to_config
from ditto_research.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ditto_research.diffusion.noise import NoiseSource
from ditto_research.diffusion.samplers import WindowSampler
from ditto_research.errors import ConfigError
from ditto_research.face.factory import make_frontend
from ditto_research.face.frontend import FaceFrontend
from ditto_research.media.source import load_source
from ditto_research.motion.audio2motion import Audio2MotionSettings, generate_motion_offline
from ditto_research.motion.conditions import ConditionBuilder, ConditionFlags
from ditto_research.motion.format import clip_motion, source_motion_vector
from ditto_research.motion.online import REFERENCE_PREFIX_CHUNKSIZE, OnlineMotionGenerator
from ditto_research.pipeline.controls import build_frame_controls, build_stitcher
from ditto_research.pipeline.fast_render import FastRenderer
from ditto_research.pipeline.networks import Networks, build_networks, build_window_sampler
from ditto_research.pipeline.observers import (
    PipelineObserver,
    notify,
    observed_conditions,
    observed_window_sampler,
)
from ditto_research.pipeline.randomness import RandomnessFactory, RunRandomness, default_randomness
from ditto_research.pipeline.registration import RegisteredSource, register_source
from ditto_research.pipeline.runner import BaseStage
from ditto_research.pipeline.stages import (
    DecodeStage,
    FeatureStage,
    MotionStage,
    OnlineMotionStage,
    PasteStage,
    StitchStage,
    WarpStage,
)

log = logging.getLogger(__name__)

__all__ = ["Engine"]

T = TypeVar("T")


class Engine:
    """Networks, speech encoder, face front-end and stage assembly for one configuration.

    Args:
        cfg: the composed config (any ``mode``; the sessions decide how to run).
    """

    def __init__(self, cfg: PipelineConfig | DictConfig, randomness: RandomnessFactory | None = None) -> None:
        self.cfg: PipelineConfig = cfg if isinstance(cfg, PipelineConfig) else to_config(cfg)
        self._randomness = randomness
        backend = self.cfg.backend
        if backend.device == "cuda" and backend.name == "pytorch" and not torch.cuda.is_available():
            raise ConfigError("backend.device=cuda but no CUDA device is available; use backend.device=cpu")
        if backend.device == "cuda" and "bf16" in (backend.precision, backend.lmdm_precision):
            if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
                raise ConfigError(
                    f"bf16 was asked for but {torch.cuda.get_device_name()} has no bfloat16 support; use "
                    "backend.precision=fp16 (or fp32)"
                )
        self.device = torch.device(backend.device)
        self.root = CheckpointRoot(Path(self.cfg.model.checkpoint_root))
        self._lock = threading.Lock()  # lazy building
        self._frontend_lock = (
            threading.Lock()
        )  # one registration at a time (the front-end is not thread-safe)
        self._parent: Engine | None = None  # derive(): components come from this engine
        self._networks: Networks | None = None
        self._encoder: SpeechEncoder | None = None
        self._features_file: PrecomputedFeatures | None = None
        self._frontend: FaceFrontend | None = None
        self._fast_renderer: FastRenderer | None = None

    @classmethod
    def from_overrides(
        cls, overrides: list[str] | None = None, randomness: RandomnessFactory | None = None
    ) -> Engine:
        """Compose ``conf/infer.yaml`` with command-line style overrides (e.g. ``["model=tiny"]``)."""
        return cls(compose("infer", overrides), randomness)

    def derive(self, cfg: PipelineConfig) -> Engine:
        """An engine for ``cfg`` that shares this one's networks, encoder and face front-end.

        ``cfg`` may change only what is made fresh for each stream (sampler, motion windowing and smoothing,
        controls, ``mode``); the components and the LMDM condition layout must be this engine's.

        Raises:
            ConfigError: ``cfg`` changes a component (the message names the key).
        """
        for name in ("model", "backend", "face", "audio_encoder"):
            if getattr(cfg, name) != getattr(self.cfg, name):
                raise ConfigError(
                    f"{name} is fixed by this engine ({name}={getattr(self.cfg, name).name}); "
                    f"per-session options may change sampler, motion, control and mode only"
                )
        fixed_motion = ("seq_frames", "use_emo", "use_eye_open", "use_eye_ball", "use_sc")
        for key in fixed_motion:
            if getattr(cfg.motion, key) != getattr(self.cfg.motion, key):
                raise ConfigError(
                    f"motion.{key} is fixed by the loaded LMDM ({getattr(self.cfg.motion, key)})"
                )
        child = Engine(cfg, self._randomness)
        child._parent = self._parent or self
        return child

    # ---- components (built once, shared) -----------------------------------------------------------------

    def _built(self, attr: str, build: Callable[[], T]) -> T:
        """``self.<attr>``, built by ``build()`` on first use (once, whichever thread asks first)."""
        if self._parent is not None:
            return self._parent._built(attr, build)
        value = getattr(self, attr)
        if value is None:
            with self._lock:
                value = getattr(self, attr)
                if value is None:
                    value = build()
                    setattr(self, attr, value)
        return value

    @property
    def networks(self) -> Networks:
        cfg = self.cfg
        return self._built("_networks", lambda: build_networks(cfg.model, cfg.motion, cfg.backend))

    def fast_renderer(self) -> FastRenderer:
        """Warp + decode as compiled networks and/or captured CUDA graphs (built and captured once, here, on
        the calling thread, before any stage thread runs them)."""
        cfg = self.cfg
        return self._built(
            "_fast_renderer",
            lambda: FastRenderer(
                self.networks.warp_network,
                self.networks.decoder,
                self.device,
                compile_networks=cfg.backend.compile,
                cuda_graphs=cfg.backend.cuda_graphs,
                batch_sizes=sorted({1, cfg.render.resolved_batch_size(cfg.backend.device)}),
            ),
        )

    @property
    def encoder(self) -> SpeechEncoder:
        """The speech encoder (ConfigError with ``audio_encoder=precomputed``, which has none)."""
        if self.cfg.audio_encoder_name == "precomputed":
            raise ConfigError(
                "audio_encoder=precomputed reads features from audio_encoder.path and has no encoder; "
                "choose another audio_encoder to compute features"
            )
        return self._built("_encoder", self._make_encoder)

    @property
    def features_file(self) -> PrecomputedFeatures | None:
        """The feature file of ``audio_encoder=precomputed`` (read once, when the config validated), else
        None."""
        if self.cfg.audio_encoder_name != "precomputed":
            return None
        return self._built("_features_file", self.cfg.audio_encoder.precomputed_features)

    @property
    def frontend(self) -> FaceFrontend:
        face = self.cfg.face
        return self._built(
            "_frontend",
            lambda: make_frontend(
                face.name,
                self.root.aux_dir,
                face.min_face_size,
                verbose=self.cfg.verbose,
                landmarks=face.given_landmarks(),
                select=face.select,
                reject_unusable=face.reject_unusable,
            ),
        )

    def _make_encoder(self) -> SpeechEncoder:
        enc, name = self.cfg.audio_encoder, self.cfg.audio_encoder_name
        path = enc.path
        if name == "hubert_onnx" and path is None:
            path = str(self.root.aux_path(HUBERT_FILE))
        return make_encoder(name, path, enc.seed, self.cfg.backend.device)

    def load(self) -> float:
        """Build networks, speech encoder, face front-end (and the compiled / captured renderer) now; returns
        the seconds it took."""
        t0 = time.perf_counter()
        _ = self.networks, self.frontend
        _ = self.features_file if self.cfg.audio_encoder_name == "precomputed" else self.encoder
        if self.cfg.backend.fused_render:
            self.fast_renderer()
        return time.perf_counter() - t0

    def close(self) -> None:
        """Free the face front-end (its native graph); networks are released with the engine. A derived
        engine leaves the shared components to the engine it came from."""
        if self._parent is not None:
            return
        with self._frontend_lock, self._lock:
            if self._frontend is not None:
                self._frontend.close()
                self._frontend = None

    # ---- source --------------------------------------------------------------------------------------------

    def register(
        self, source_path: str | Path, observers: Sequence[PipelineObserver] = ()
    ) -> RegisteredSource:
        """Load and register a portrait image or video (see :mod:`ditto_research.pipeline.registration`).

        ``observers`` see every registered source frame (``on_source_frame``). The caller owns the result:
        close ``source.media`` when done with it.
        """
        face = self.cfg.face
        media = load_source(source_path, max_size=face.max_size, n_frames=face.template_n_frames)
        nets = self.networks
        try:
            with (self._parent or self)._frontend_lock:
                return register_source(
                    media,
                    self.frontend,
                    nets.motion_extractor,
                    nets.appearance_extractor,
                    face,
                    self.device,
                    what=Path(source_path).name,
                    progress=self.cfg.progress,
                    observers=observers,
                )
        except BaseException:
            media.close()
            raise

    # ---- randomness ----------------------------------------------------------------------------------------

    def randomness(self) -> RunRandomness:
        """Fresh random streams for one run (from ``control.seed`` / ``control.noise``, or the factory)."""
        if self._randomness is not None:
            return self._randomness()
        return default_randomness(self.cfg.control, self.device)

    # ---- motion --------------------------------------------------------------------------------------------

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
        """(2, 265) clip range of generated motion (``motion.v_min_max_for_clip``, read once when the config
        validated), or None."""
        return self.cfg.motion.value_range()

    def condition_builder(self, source: RegisteredSource) -> ConditionBuilder:
        """The LMDM condition builder for ``source``: the config's condition flags, emotion and eye
        settings."""
        motion, control = self.cfg.motion, self.cfg.control
        flags = ConditionFlags(motion.use_emo, motion.use_sc, motion.use_eye_open, motion.use_eye_ball)
        builder = ConditionBuilder(flags)
        builder.setup(
            sc=source.sc,
            eye_open=np.concatenate([f.eye_open for f in source.frames]),
            eye_ball=np.concatenate([f.eye_ball for f in source.frames]),
            emotion=control.emotion_rows(),
            eye_f0_mode=control.eye_f0_mode,
        )
        return builder

    def window_sampler(
        self, noise: NoiseSource | None = None, observers: Sequence[PipelineObserver] = ()
    ) -> WindowSampler:
        """A fresh LMDM window sampler, one per run; its draws come from ``noise`` (None: this run's
        :meth:`randomness`). ``observers`` see every sampled window (``on_motion_window``)."""
        noise = self.randomness().noise if noise is None else noise
        sampler = build_window_sampler(self.networks.lmdm, self.cfg.sampler, noise)
        return observed_window_sampler(sampler, observers) if observers else sampler

    def speech_features(self, audio: np.ndarray, what: str = "the audio") -> np.ndarray:
        """(N, D) speech features of 16 kHz mono ``audio``, one row per output frame (N = ceil(seconds * 25)):
        the encoder's offline features, or the rows of ``audio_encoder=precomputed``."""
        num_frames = num_video_frames(len(audio), SAMPLE_RATE, FPS)
        if self.features_file is not None:
            return self.features_file.for_frames(num_frames, what)
        return offline_features(audio, self.encoder, tuple(self.cfg.mode.chunksize))[:num_frames]

    def generate_motion(
        self,
        audio: np.ndarray,
        source: RegisteredSource,
        observers: Sequence[PipelineObserver] = (),
        randomness: RunRandomness | None = None,
    ) -> np.ndarray:
        """(N, 265) motion for 16 kHz mono ``audio`` (N = ceil(seconds * 25)), as the reference computes it.

        ``observers`` see the conditions (``on_conditions``) and every sampled window; ``randomness``: this
        run's streams (None: fresh ones).
        """
        feats = self.speech_features(audio)
        conds = self.condition_builder(source)(feats, 0)
        notify(observers, "on_conditions", 0, conds)
        noise = (randomness or self.randomness()).noise
        motion = generate_motion_offline(
            torch.from_numpy(conds),
            self.window_sampler(noise, observers),
            source_motion_vector(source.frames[0].x_s_info),
            self.motion_settings(),
            self.device,
        )
        return clip_motion(motion, self.motion_value_range())

    def online_motion_generator(
        self,
        source: RegisteredSource,
        observers: Sequence[PipelineObserver] = (),
        randomness: RunRandomness | None = None,
    ) -> OnlineMotionGenerator:
        """The online audio-to-motion state of one stream (fresh noise unless ``randomness`` is given)."""
        settings = self.motion_settings(fuse_mode="online")
        builder = self.condition_builder(source)
        condition = observed_conditions(builder, observers) if observers else builder
        noise = (randomness or self.randomness()).noise
        return OnlineMotionGenerator(
            self.window_sampler(noise, observers),
            condition,
            source_motion_vector(source.frames[0].x_s_info),
            settings,
            self.silence_features(settings.overlap_v2),
            self.motion_value_range(),
            self.device,
        )

    def silence_features(self, num_frames: int) -> np.ndarray:
        """(O, D) features of O * 640 zero samples, with the reference's default chunksize (its wav2feat
        call); ``audio_encoder=precomputed``: the file's ``silence`` rows."""
        if self.features_file is not None:
            return self.features_file.silence_rows(num_frames)
        silence = np.zeros(max(num_frames, 1) * SAMPLES_PER_FRAME, np.float32)
        return offline_features(silence, self.encoder, REFERENCE_PREFIX_CHUNKSIZE)[:num_frames]

    def check_speech_features(self, num_frames: int, what: str) -> None:
        """With ``audio_encoder=precomputed``: InputError, before any work, when the file has fewer rows than
        the ``num_frames`` of ``what`` (the audio); otherwise nothing to check."""
        if self.features_file is not None:
            self.features_file.for_frames(num_frames, what)

    def feature_stream(self) -> OnlineFeatureStream | PrecomputedFeatureStream:
        """Online speech features as audio arrives (``mode.chunksize`` windows)."""
        chunksize = tuple(self.cfg.mode.chunksize)
        if self.features_file is not None:
            return self.features_file.stream(chunksize)
        return OnlineFeatureStream(self.encoder, chunksize)

    # ---- stages (assembled here only) ---------------------------------------------------------------------

    def stitcher(self, source: RegisteredSource, num_frames: int, randomness: RunRandomness | None = None):
        """The motion stitcher of one clip (``num_frames < 0``: an open-ended stream)."""
        blink = (randomness or self.randomness()).blink
        return build_stitcher(self.cfg.control, self.networks.stitch_network, source, num_frames, blink)

    def render_stages(
        self,
        source: RegisteredSource,
        num_frames: int,
        observers: Sequence[PipelineObserver] = (),
        randomness: RunRandomness | None = None,
        batch_size: int = 1,
    ) -> list[BaseStage]:
        """stitch -> warp -> decode -> paste for ``source``; ``num_frames < 0``: an open-ended stream.

        ``batch_size`` frames are warped and decoded per call (the offline pipeline passes
        ``render.batch_size``). With ``backend.cuda_graphs`` / ``backend.compile``, warp and decode are one
        ``render`` stage running the captured graph / compiled networks
        (:mod:`ditto_research.pipeline.fast_render`).
        """
        cfg, nets = self.cfg, self.networks
        if num_frames < 0 and cfg.control.fade_out > 0:
            log.warning("control.fade_out needs the stream length; it is off for an open-ended stream")
        threads = cfg.backend.num_threads
        stitcher = self.stitcher(source, num_frames, randomness)
        controls = build_frame_controls(cfg.control, num_frames)
        paste = cfg.render.resolved_paste(cfg.backend.device)
        stages: list[BaseStage] = [StitchStage(stitcher, source, controls, self.device, observers=observers)]
        if cfg.backend.fused_render:
            stages.append(self.fast_renderer().stage(source, batch_size, threads, observers))
        else:
            stages += [
                WarpStage(nets.warp_network, source, threads, observers=observers, batch_size=batch_size),
                DecodeStage(nets.decoder, threads, observers=observers),
            ]
        return [*stages, PasteStage(source, paste, self.device)]

    def offline_stages(
        self, source: RegisteredSource, num_frames: int, observers: Sequence[PipelineObserver] = ()
    ) -> list[BaseStage]:
        """The offline pipeline: the whole clip's audio in, :class:`FrameImage` out (one run's randomness)."""
        randomness = self.randomness()
        motion = MotionStage(
            lambda audio: self.generate_motion(audio, source, observers, randomness), observers
        )
        batch = self.cfg.render.resolved_batch_size(self.cfg.backend.device)
        return [motion, *self.render_stages(source, num_frames, observers, randomness, batch_size=batch)]

    def stream_stages(
        self,
        source: RegisteredSource,
        num_frames: int | None,
        observers: Sequence[PipelineObserver] = (),
        render: bool = True,
    ) -> list[BaseStage]:
        """The online pipeline: :class:`AudioPiece` in; :class:`FrameImage` out (``render=False``: motion)."""
        randomness = self.randomness()
        stages: list[BaseStage] = [
            FeatureStage(self.feature_stream()),
            OnlineMotionStage(self.online_motion_generator(source, observers, randomness), observers),
        ]
        if render:
            length = -1 if num_frames is None else int(num_frames)
            stages += self.render_stages(source, length, observers, randomness)
        return stages
