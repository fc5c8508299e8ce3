"""Structured config of ``python -m ditto_research.prepare`` (``conf/prepare.yaml``), registered in Hydra's
ConfigStore as ``base_prepare``.

The root extends :class:`~ditto_research.config.PipelineConfig`: the same ``model`` / ``backend`` /
``face`` / ``audio_encoder`` groups as infer build the engine whose networks compute the features (the
sampling groups are there because the engine is one; preparation does not use them).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ditto_research.choices import check_choice
from ditto_research.config import PipelineConfig, register_configs
from ditto_research.constants import FPS
from ditto_research.errors import ConfigError

__all__ = ["EMOTION_SOURCES", "PrepareConfig", "PrepareOptions", "register_prepare_configs"]

EMOTION_SOURCES = ("none", "label", "classifier")
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".ts")
_SHARD = re.compile(r"(\d+)/(\d+)")
# Bumped when a feature's definition changes (recorded in the manifest with the settings that shape them).
FEATURE_VERSIONS = {
    "motion": 1,
    "canonical_kp": 1,
    "audio_features": 1,
    "eye": 1,
    "emotion": 1,
    "segments": 1,
}


@dataclass
class PrepareOptions:
    """How videos become training clips (group ``prepare``)."""

    # Add the mirrored copy of every clip (<id>_flip): mirrored frames registered again, the same audio and
    # emotion; doubles the data, as the released training recipe does.
    flip: bool = False
    # Emotion rows: none (every frame neutral, recorded as none) | label (the list's `emotion` column: a
    # name such as happy or an index 0-7; rows without one are neutral) | classifier (the model in
    # emotion_model, e.g. HSEmotion enet_b2_8 exported to ONNX, on every 5th frame's face, interpolated).
    emotion: str = "none"
    # prepare.emotion=classifier: an ONNX emotion model with input (N, 3, S, S) and 8 outputs in HSEmotion's
    # class order (nothing is downloaded: bring the file).
    emotion_model: str | None = None
    # Shortest clip kept, in frames at 25 fps (81 = one 80-frame training window and the frame before it).
    min_frames: int = 81
    # Longer stretches of one shot are cut into clips of at most this many seconds (memory stays bounded;
    # each cut costs one window's worth of training items).
    max_clip_s: float = 120.0
    # Shot-cut sensitivity: mean HSV change between consecutive frames (0-255 scale) that counts as a cut
    # (null: the detector's default; lower finds more cuts).
    cut_threshold: float | None = None
    # Frames per motion-extractor call (1 = inference's per-frame path; larger helps on a GPU).
    batch_size: int = 1
    # Processes on this machine, each with its own engine, videos handed out one at a time.
    workers: int = 1
    # This job's share of the video list, "i/n" (the i-th of n interleaved parts, from 0): shards run as
    # separate jobs (e.g. a Hydra multirun on a cluster) and merge into one manifest as each finishes.
    shard: str = "0/1"
    # Prepare only the first N videos of the list (null: all).
    max_videos: int | None = None
    # Write report.md and contact_sheet.png in the dataset folder when the job ends.
    report: bool = True

    def __post_init__(self) -> None:
        check_choice("prepare.emotion", self.emotion, EMOTION_SOURCES)
        if self.emotion == "classifier" and not self.emotion_model:
            raise ConfigError(
                "prepare.emotion=classifier needs prepare.emotion_model=FILE.onnx (e.g. HSEmotion enet_b2_8 "
                "exported to ONNX); or use prepare.emotion=none|label"
            )
        if self.min_frames < 81:
            raise ConfigError(
                f"prepare.min_frames={self.min_frames} must be >= 81 (one 80-frame training window and the "
                "frame before it)"
            )
        if self.max_clip_s * FPS < self.min_frames:
            raise ConfigError(
                f"prepare.max_clip_s={self.max_clip_s} is shorter than prepare.min_frames={self.min_frames} "
                f"frames ({self.min_frames / FPS:.2f} s)"
            )
        if self.cut_threshold is not None and self.cut_threshold <= 0:
            raise ConfigError(f"prepare.cut_threshold={self.cut_threshold} must be > 0 (or null)")
        for key in ("batch_size", "workers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"prepare.{key}={getattr(self, key)} must be >= 1")
        if self.max_videos is not None and self.max_videos < 1:
            raise ConfigError(f"prepare.max_videos={self.max_videos} must be >= 1 (or null for all)")
        self.shard_index()

    def shard_index(self) -> tuple[int, int]:
        """(i, n) of ``shard``."""
        match = _SHARD.fullmatch(str(self.shard).strip())
        if match is None or not int(match.group(1)) < int(match.group(2)):
            raise ConfigError(
                f"prepare.shard={self.shard!r} must be i/n with 0 <= i < n (e.g. 0/4 for the first of four)"
            )
        return int(match.group(1)), int(match.group(2))

    @property
    def max_frames(self) -> int:
        return int(self.max_clip_s * FPS)


@dataclass
class PrepareConfig(PipelineConfig):
    """Root of ``python -m ditto_research.prepare``: talking videos in, a prepared dataset out."""

    progress: bool = True
    # A folder of videos (every video file in it and its sub-folders, in name order) or a list: a .csv with a
    # `video` column and optional `id`, `emotion`, `start`, `end` (seconds) columns, or a .txt with one
    # video per line. Relative paths are relative to the list.
    videos: str = MISSING
    # The dataset folder (created; a rerun adds what is missing and skips what is done).
    out: str = MISSING
    prepare: PrepareOptions = field(default_factory=PrepareOptions)

    def identity(self) -> dict[str, Any]:
        """The settings that shape the features: a dataset is only ever extended with the same ones."""
        face = self.face
        return {
            "feature_versions": dict(FEATURE_VERSIONS),
            "model": {
                "name": self.model.name,
                "checkpoint_root": self.model.checkpoint_root,
                "lmdm_file": self.model.lmdm_file,
                "seed": self.model.seed,
            },
            "face": {
                "name": face.name,
                "crop_scale": face.crop_scale,
                "crop_vx_ratio": face.crop_vx_ratio,
                "crop_vy_ratio": face.crop_vy_ratio,
                "crop_flag_do_rot": face.crop_flag_do_rot,
                "apply_crop_vx_ratio": face.apply_crop_vx_ratio,
                "max_size": face.max_size,
                "min_face_size": face.min_face_size,
                "select": face.select,
                "reject_unusable": face.reject_unusable,
            },
            "audio_encoder": self.audio_encoder_name,
            "chunksize": list(self.mode.chunksize),
            "prepare": {
                "flip": self.prepare.flip,
                "emotion": self.prepare.emotion,
                "emotion_model": self.prepare.emotion_model,
                "min_frames": self.prepare.min_frames,
                "max_clip_s": self.prepare.max_clip_s,
                "cut_threshold": self.prepare.cut_threshold,
            },
        }

    def identity_hash(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def register_prepare_configs() -> None:
    """Store the pipeline group schemas plus ``base_prepare``."""
    register_configs()
    ConfigStore.instance().store(name="base_prepare", node=PrepareConfig)
