"""Structured config of ``python -m ditto_research.evaluate.run`` (``conf/evaluate.yaml``), registered in
Hydra's ConfigStore.

The evaluate app's root extends :class:`~ditto_research.config.PipelineConfig` (every group of the infer app
with the same schemas, which the engine is built from directly) and adds the keys below.
``register_evaluate_configs()`` stores

- ``base_evaluate``: the root schema that ``conf/evaluate.yaml`` extends (a typo in a key fails at compose),
- ``schema_logger``: the schema ``conf/logger/*.yaml`` extend.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ditto_research.choices import EXECUTORS, LOGGER_NAMES, METRIC_NAMES, WANDB_MODES, check_choice
from ditto_research.config import PipelineConfig, register_configs
from ditto_research.errors import ConfigError

__all__ = [
    "EXECUTORS",
    "LOGGER_NAMES",
    "METRIC_NAMES",
    "EvaluateConfig",
    "LightningConfig",
    "LoggerConfig",
    "register_evaluate_configs",
]


@dataclass
class LoggerConfig:
    """Experiment tracking (group ``logger``, default ``wandb``; ``logger=none`` logs nothing extra). The
    run's own ``results.json`` / ``clips.csv`` / ``stages.csv`` are written whatever the logger."""

    # wandb: Weights & Biases (installed with ditto-research); csv: one summary row per run appended to a
    # shared CSV.
    name: str = MISSING
    # wandb: project, entity (null: your default), group (null: the sweep folder's name in a multirun), tags.
    project: str = "ditto-research"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # wandb: offline (nothing leaves the machine; upload later with `wandb sync DIR`) | online (live upload;
    # needs `wandb login` or WANDB_API_KEY) | disabled (the API works, nothing is written) | null (default:
    # the WANDB_MODE environment variable when it is set, else offline).
    mode: str | None = None
    # wandb: folder of the W&B run files (null: <output_dir>, i.e. <output_dir>/wandb/...).
    dir: str | None = None
    # wandb: upload each clip's MP4 (wandb.Video) and a strip of sample frames.
    log_media: bool = True
    # csv: the shared file (null: <sweep dir>/runs.csv in a multirun, <output_dir>/runs.csv otherwise).
    path: str | None = None

    def __post_init__(self) -> None:
        check_choice("logger", self.name, LOGGER_NAMES)
        if self.mode is not None:
            check_choice("logger.mode", self.mode, WANDB_MODES)

    @property
    def wandb_mode(self) -> str:
        """The W&B mode a run starts in: ``mode``, else ``$WANDB_MODE``, else offline."""
        return self.mode or os.environ.get("WANDB_MODE") or "offline"


@dataclass
class LightningConfig:
    """``executor=lightning``: clips sharded over devices with PyTorch Lightning ``Trainer.predict``."""

    # Lightning accelerator: auto | cpu | gpu | cuda | ...
    accelerator: str = "auto"
    # Devices per node: an int, a list of indices, or "auto".
    devices: Any = "auto"
    # auto (one device) | ddp (several: one process per device, clips sharded across them) | ...
    strategy: str = "auto"
    # Nodes (SLURM / torchrun); the clips are sharded over nodes x devices processes.
    num_nodes: int = 1

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ConfigError(f"lightning.num_nodes={self.num_nodes} must be >= 1")


@dataclass
class EvaluateConfig(PipelineConfig):
    """Root of ``python -m ditto_research.evaluate.run``: one pipeline configuration run over an evaluation
    set."""

    progress: bool = False  # many clips: one log line each instead of progress bars
    # Set by conf/evaluate.yaml's defaults (logger: wandb); None is logger=none.
    logger: LoggerConfig | None = None
    # builtin (generated locally: scikit-image faces + espeak-ng speech) | a .csv with columns source,audio
    # (optional id, reference) | a .yaml list of {source, audio, id, reference} | a list of real talking
    # videos with a `video` column alone (self-reconstruction: the source is its first frame, the audio its
    # track, the ground truth its frames). Relative paths are relative to the dataset file.
    dataset: str = "builtin"
    # Evaluate only the first N clips (null: all). The built-in set is ordered shortest first.
    max_clips: int | None = None
    # Cut every audio to its first N seconds before generating (null: whole files).
    max_seconds: float | None = None
    # Metrics besides latency (always measured): motion (statistics of the generated motion), sync_proxy
    # (MediaPipe mouth opening vs the audio envelope, no weights), syncnet (LSE-D / LSE-C; needs
    # syncnet_weights, skipped with a note without), quality (against the clip's ground-truth video:
    # evaluate/quality.py; clips without one get a note).
    metrics: list[str] = field(default_factory=lambda: list(METRIC_NAMES))
    # syncnet_v2.model from joonson/syncnet_python (null: the syncnet metric is skipped with a note).
    syncnet_weights: str | None = None
    # Quality against ground truth (metric `quality`, for clips whose dataset row gives a `reference` or a
    # `video`): PSNR, SSIM, LMD always; these weights add FID (NVIDIA's InceptionV3 TorchScript
    # inception-2015-12-05.pt), FVD (StyleGAN-V's i3d_torchscript.pt), LPIPS (a TorchScript of
    # lpips.LPIPS(net="alex")) and CSIM (an ArcFace ONNX). Definitions: docs/evaluation.md.
    inception_weights: str | None = None
    i3d_weights: str | None = None
    lpips_weights: str | None = None
    arcface_weights: str | None = None
    # FID uses every N-th frame of each clip.
    fid_stride: int = 1
    # Largest audio-video offset searched by both lip-sync metrics, in frames (SyncNet's vshift).
    sync_max_offset: int = 15
    # Keep each clip's MP4 under <output_dir>/videos/ (also what the W&B logger uploads).
    save_videos: bool = True
    # Frames per clip saved as PNG under <output_dir>/samples/ (and logged) for a quick look.
    sample_frames: int = 4
    # Frames handed to the lip-sync metrics are downscaled so that their longest side is at most this.
    metrics_max_size: int = 1024
    # Where results go (null: Hydra's run directory, or outputs/evaluate/<time> from the Python API).
    output_dir: str | None = None
    # local: clips one after the other in this process | lightning: Trainer.predict over devices.
    executor: str = "local"
    lightning: LightningConfig = field(default_factory=LightningConfig)
    # Write report.md / report.html (python -m ditto_research.evaluate.report) after a run, or once after a
    # sweep.
    report: bool = True
    # Exit non-zero (2) when any clip failed; otherwise a run with failed clips exits 0 and says so in its
    # last line (the failures are in results.json and the report).
    strict: bool = False

    def __post_init__(self) -> None:
        for name in self.metrics:
            check_choice("metrics entry", name, METRIC_NAMES)
        check_choice("executor", self.executor, EXECUTORS)
        if self.max_clips is not None and self.max_clips < 1:
            raise ConfigError(f"max_clips={self.max_clips} must be >= 1 (or null for all clips)")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"max_seconds={self.max_seconds} must be > 0 (or null for whole files)")
        if self.sync_max_offset < 0:
            raise ConfigError(f"sync_max_offset={self.sync_max_offset} must be >= 0 frames")
        if self.sample_frames < 0:
            raise ConfigError(f"sample_frames={self.sample_frames} must be >= 0")
        if self.fid_stride < 1:
            raise ConfigError(f"fid_stride={self.fid_stride} must be >= 1")
        if self.metrics_max_size < 64:
            raise ConfigError(f"metrics_max_size={self.metrics_max_size} must be >= 64 pixels")

    def uses(self, metric: str) -> bool:
        """Whether ``metric`` is selected."""
        return metric in self.metrics


def register_evaluate_configs() -> None:
    """Store the infer group schemas plus ``base_evaluate`` and ``schema_logger``."""
    register_configs()
    cs = ConfigStore.instance()
    cs.store(name="base_evaluate", node=EvaluateConfig)
    cs.store(name="schema_logger", node=LoggerConfig)
