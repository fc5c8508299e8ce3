"""Structured config of ``python -m ditto_research.train`` (``conf/train.yaml``), registered in Hydra's
ConfigStore as ``base_train``.

The root extends :class:`~ditto_research.config.PipelineConfig`: ``model`` says which LMDM architecture (and,
with ``train.init=model``, which weights) is trained, ``motion`` which condition blocks it takes, ``sampler``
how validation samples windows, and the rest builds the inference engine that renders validation clips.
``train.*`` is the optimisation, ``trainer.*`` Lightning's Trainer, ``logger`` the experiment log (the
evaluation's group: W&B offline by default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from ditto_research.choices import check_choice
from ditto_research.config import PipelineConfig, register_configs
from ditto_research.errors import ConfigError
from ditto_research.evaluate.config import LoggerConfig

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "TrainConfig",
    "TrainOptions",
    "TrainerOptions",
    "register_train_configs",
]

OPTIMIZERS = ("adamw", "adan")
SCHEDULES = ("cosine", "constant")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true")


@dataclass
class TrainOptions:
    """What is trained and how (group ``train``)."""

    # Where the weights start: model (the model set's LMDM: the official lmdm_v0.4_hubert.pth with
    # model=ditto — fine-tuning —, seeded random weights with untrained/tiny) | scratch (a fresh random
    # initialisation from train.seed) | PATH of an LMDM file in the official layout ({"model_state_dict":
    # ...}, e.g. an earlier run's lmdm.pth). Keys are loaded strictly; the condition width comes from the
    # checkpoint, and a dataset whose conditions have another width is refused.
    init: str = "model"
    # Windows per optimizer step and device (the global batch is batch_size x devices x nodes x accumulate).
    batch_size: int = 32
    # Optimizer steps of the whole run (the schedule ends here).
    max_steps: int = 10000
    # adamw (torch.optim.AdamW) | adan (the released code's optimizer: Adan, lr 1e-4, weight decay 0.02).
    optimizer: str = "adamw"
    lr: float = 1e-4
    weight_decay: float = 0.02
    # Optimizer betas (null: the optimizer's defaults: AdamW (0.9, 0.999), Adan (0.98, 0.92, 0.99)).
    betas: list[float] | None = None
    # cosine (warmup, then cosine decay to lr x min_lr_ratio at max_steps) | constant (warmup, then lr). A
    # warmup longer than the run is cut to max_steps (with a warning).
    schedule: str = "cosine"
    warmup_steps: int = 500
    min_lr_ratio: float = 0.1
    # Clip the gradient's global L2 norm to this (null: no clipping, as the released code).
    grad_clip: float | None = 1.0
    # Batches whose gradients are summed per optimizer step.
    accumulate: int = 1
    # Exponential moving average of the weights, validated and exported (null: off).
    ema_decay: float | None = 0.999
    # The objective (the released code's values): probability of training a sample without its condition
    # (classifier-free guidance), transformer dropout, the first-frame-vs-previous-frame term, the
    # |prediction| regulariser.
    cond_drop_prob: float = 0.2
    dropout: float = 0.1
    last_frame_loss: bool = True
    reg_loss: bool = False
    # Keep the condition encoder (the projection of audio / emotion / eyes / keypoints and the null
    # embeddings) fixed: fine-tune only the motion transformer.
    freeze_condition_encoder: bool = False
    # Share of the dataset's videos held out for validation (split by video: a clip, its mirrored copy and
    # every other clip of the same video stay on one side; 0 = no validation).
    val_fraction: float = 0.1
    # Validate every N optimizer steps (and at the end).
    val_every: int = 500
    # Held-out windows whose loss is measured on a fixed grid of val_t_grid diffusion times (the same
    # windows, times and noise every validation: comparable across runs of the same dataset).
    val_windows: int = 64
    val_t_grid: int = 10
    # Held-out windows sampled with the configured sampler (sampler.*) for the per-part errors against the
    # real motion, the jitter and the mouth-audio correlation.
    val_sample_windows: int = 4
    # Render a held-out clip through the inference engine every N optimizer steps (0 = never) and log it;
    # render_seconds of it. The source is the held-out clip's first frame, its audio the clip's own.
    render_every: int = 0
    render_seconds: float = 4.0
    # With render_every: SyncNet weights (syncnet_v2.model, as evaluation's syncnet_weights) to score each
    # render's lip sync (LSE-C / LSE-D / AV offset) as evaluation does; the weights-free sync proxy (MediaPipe
    # mouth opening vs the audio envelope) is always measured on renders that show a face.
    syncnet_weights: str | None = None
    # Seeds the data order, the diffusion times, noise and condition drops, dropout, the split.
    seed: int = 0
    # DataLoader worker processes per device.
    num_workers: int = 2
    # Export the EMA weights (true) or the raw ones as lmdm.pth when EMA is on.
    export_ema: bool = True

    def __post_init__(self) -> None:
        check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        check_choice("train.schedule", self.schedule, SCHEDULES)
        for key in ("batch_size", "max_steps", "accumulate", "val_every", "val_t_grid"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}={getattr(self, key)} must be >= 1")
        for key in ("warmup_steps", "val_windows", "val_sample_windows", "render_every", "num_workers"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key}={getattr(self, key)} must be >= 0")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(
                f"train.lr={self.lr} must be > 0 and train.weight_decay={self.weight_decay} >= 0"
            )
        for key in ("min_lr_ratio", "cond_drop_prob", "dropout"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"train.{key}={getattr(self, key)} must be in [0, 1]")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"train.val_fraction={self.val_fraction} must be in [0, 1)")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train.grad_clip={self.grad_clip} must be > 0 (or null: no clipping)")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train.ema_decay={self.ema_decay} must be in (0, 1) (or null: no EMA)")
        want = 3 if self.optimizer == "adan" else 2
        if self.betas is not None and len(self.betas) != want:
            raise ConfigError(f"train.betas needs {want} values for train.optimizer={self.optimizer}")
        if self.syncnet_weights is not None and not Path(self.syncnet_weights).expanduser().is_file():
            raise ConfigError(
                f"train.syncnet_weights={self.syncnet_weights} does not exist; give syncnet_v2.model "
                "(joonson/syncnet_python) or leave it null"
            )
        if self.render_seconds <= 0:
            raise ConfigError(f"train.render_seconds={self.render_seconds} must be > 0")


@dataclass
class TrainerOptions:
    """Lightning's Trainer (group ``trainer``): where and how the steps run."""

    # auto | cpu | gpu | cuda | ...
    accelerator: str = "auto"
    # Devices per node: an int, a list of indices, or "auto".
    devices: Any = 1
    # auto | ddp | ddp_spawn | ... (several devices: one process per device, gradients all-reduced).
    strategy: str = "auto"
    num_nodes: int = 1
    # 32-true | bf16-mixed (GPUs with bf16) | 16-mixed | 64-true.
    precision: str = "32-true"
    # Log the training losses every N optimizer steps.
    log_every_n_steps: int = 10
    # Save a checkpoint for resuming every N optimizer steps (and at the end; last.ckpt is always the newest).
    ckpt_every: int = 1000

    def __post_init__(self) -> None:
        check_choice("trainer.precision", self.precision, PRECISIONS)
        if self.num_nodes < 1 or self.log_every_n_steps < 1 or self.ckpt_every < 1:
            raise ConfigError(
                "trainer.num_nodes, trainer.log_every_n_steps and trainer.ckpt_every must be >= 1"
            )


@dataclass
class TrainConfig(PipelineConfig):
    """Root of ``python -m ditto_research.train``: a prepared dataset in, a trained LMDM out."""

    # The prepared dataset (python -m ditto_research.prepare out=...).
    data: str = MISSING
    # Where checkpoints, lmdm.pth, renders and logs go (null: Hydra's run directory).
    output_dir: str | None = None
    # Continue a run: "last" (output_dir/checkpoints/last.ckpt) or a Lightning checkpoint's path; the model,
    # data and objective settings must be the run's own.
    resume: str | None = None
    train: TrainOptions = field(default_factory=TrainOptions)
    trainer: TrainerOptions = field(default_factory=TrainerOptions)
    # Set by conf/train.yaml's defaults (logger: wandb); None is logger=none.
    logger: LoggerConfig | None = None


def register_train_configs() -> None:
    """Store the pipeline group schemas, the logger schema and ``base_train``."""
    register_configs()
    cs = ConfigStore.instance()
    cs.store(name="base_train", node=TrainConfig)
    cs.store(name="schema_logger", node=LoggerConfig)
