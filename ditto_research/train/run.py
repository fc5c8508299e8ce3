"""A training run: checks, the Lightning Trainer, validation, checkpoints, export.

    result = run_training(cfg)          # cfg: TrainConfig; python -m ditto_research.train is this

Before any step everything a user can get wrong is checked and reported in one line: the dataset (not one,
another version, empty, clips all shorter than a window, NaN — :mod:`ditto_research.data` refuses those), a
split that would leak, the initial weights (another width or layout), a resume of another run's settings,
devices the machine does not have.

Output folder: ``checkpoints/`` (Lightning's, ``last.ckpt`` the newest: ``resume=last``), ``lmdm.pth``
(official layout: ``model.lmdm_path=``), ``validation.jsonl`` (every validation), ``summary.json``, the
logger's files (W&B offline run, or ``metrics.csv``), ``renders/`` (with ``train.render_every``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from ditto_research.data import PreparedDataset
from ditto_research.errors import CheckpointError, ConfigError, InputError
from ditto_research.models import NETWORK_NAMES, load_network
from ditto_research.models.lmdm import LMDM
from ditto_research.motion.conditions import ConditionFlags, cond_dim
from ditto_research.train.config import TrainConfig
from ditto_research.train.data import PositionBatches, WindowStream, split_by_video, validation_items
from ditto_research.train.export import save_lmdm
from ditto_research.train.module import LmdmTraining

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "build_lmdm", "run_training"]


@dataclass
class TrainResult:
    """What a run left: its folder, the exported weights, the last validation, the counts."""

    output_dir: Path
    lmdm_path: Path | None
    steps: int
    validation: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    train_windows: int = 0
    val_windows: int = 0
    train_clips: int = 0
    val_clips: int = 0


def condition_flags(cfg: TrainConfig) -> ConditionFlags:
    m = cfg.motion
    return ConditionFlags(
        use_emo=m.use_emo, use_eye_open=m.use_eye_open, use_eye_ball=m.use_eye_ball, use_sc=m.use_sc
    )


def _identity(cfg: TrainConfig, lmdm: LMDM) -> dict[str, Any]:
    """What a resumed run must share with the run it continues."""
    o = cfg.train
    return {
        "model": cfg.model.name,
        "lmdm_shape": {k: list(v.shape) for k, v in lmdm.state_dict().items()},
        "cond_dim": lmdm.cond_dim,
        "data": str(Path(cfg.data).expanduser().resolve()),
        "objective": [o.cond_drop_prob, o.last_frame_loss, o.reg_loss, o.dropout],
        "seed": o.seed,
        "batch": [o.batch_size, o.accumulate],
    }


def build_lmdm(cfg: TrainConfig) -> LMDM:
    """The LMDM to train, from ``train.init`` (see :class:`~ditto_research.train.config.TrainOptions`), with
    ``train.dropout``; its condition width must be the one the dataset's windows will have."""
    from ditto_research.checkpoints import CheckpointRoot

    width = cond_dim(condition_flags(cfg))
    init, model = cfg.train.init, cfg.model
    tiny = model.name == "tiny"
    extra = {"dropout": cfg.train.dropout, "seq_frames": cfg.motion.seq_frames}
    if init == "model" and model.lmdm_path is None and model.name != "ditto":
        seed = model.seed + NETWORK_NAMES.index("lmdm")  # the weights inference gets with this model set
        return load_network("lmdm", None, seed=seed, tiny=tiny, expected_cond_dim=width, **extra).train()
    if init == "scratch":
        return load_network("lmdm", None, seed=cfg.train.seed, tiny=tiny, expected_cond_dim=width, **extra)
    if init == "model":
        path = (
            Path(model.lmdm_path)
            if model.lmdm_path
            else CheckpointRoot(model.checkpoint_root).model_path("lmdm", model.lmdm_file)
        )
    else:
        path = Path(init).expanduser()
    if not path.is_file():
        raise InputError(
            f"initial LMDM {path} does not exist; download the checkpoints (python -m ditto_research."
            "checkpoints download), give train.init=PATH, or train.init=scratch"
        )
    try:
        return load_network(
            "lmdm", path, tiny=tiny and model.name != "ditto", expected_cond_dim=width, **extra
        ).train()
    except (CheckpointError, KeyError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"initial LMDM {path} does not fit model={model.name}: {first}") from e


def _check_devices(cfg: TrainConfig) -> None:
    t = cfg.trainer
    devices = t.devices
    count = len(devices) if isinstance(devices, list) else (None if devices in ("auto", -1) else int(devices))
    gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())
    if gpu:
        have = torch.cuda.device_count()
        if have == 0:
            raise ConfigError(f"trainer.accelerator={t.accelerator} but this machine has no CUDA device")
        if count is not None and count > have:
            raise ConfigError(
                f"trainer.devices={devices} but this machine has {have} CUDA device(s); use at most {have}"
            )
    elif count is not None and count > 1 and t.accelerator == "auto":
        raise ConfigError(
            f"trainer.devices={devices} but this machine has no GPU; for {count} CPU processes (gloo) say "
            "trainer.accelerator=cpu trainer.strategy=ddp"
        )
    elif count is not None and count > (os.cpu_count() or 1):
        raise ConfigError(
            f"trainer.devices={devices} is more CPU processes than this machine's {os.cpu_count()}"
        )
    if t.precision in ("bf16-mixed", "16-mixed") and not gpu:
        raise ConfigError(f"trainer.precision={t.precision} needs a GPU here; use trainer.precision=32-true")


def _output_dir(cfg: TrainConfig) -> Path:
    if cfg.output_dir:
        return Path(cfg.output_dir).expanduser()
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path("outputs/train") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def _resume_path(cfg: TrainConfig, folder: Path) -> Path | None:
    if cfg.resume is None:
        return None
    path = folder / "checkpoints" / "last.ckpt" if cfg.resume == "last" else Path(cfg.resume).expanduser()
    if not path.is_file():
        raise InputError(
            f"resume={cfg.resume}: {path} does not exist; give the output_dir of the run to continue "
            "(resume=last) or a checkpoint file"
        )
    return path


def _check_resume(path: Path, identity: dict[str, Any]) -> None:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's: one line
        raise InputError(f"resume checkpoint {path} cannot be read ({type(e).__name__}: {e})") from e
    theirs = checkpoint.get("ditto_identity")
    if theirs is None:
        raise InputError(
            f"{path} is not a checkpoint of python -m ditto_research.train; give one of its runs"
        )
    changed = sorted(k for k in set(theirs) | set(identity) if theirs.get(k) != identity.get(k))
    if changed:
        raise InputError(
            f"resume={path} is a run with other settings ({', '.join(changed)} differ); resume it with the "
            "settings it was started with, or start a new run (another output_dir)"
        )


class _Data(L.LightningDataModule):
    def __init__(self, stream: WindowStream, cfg: TrainConfig) -> None:
        super().__init__()
        self.stream, self.cfg = stream, cfg

    def train_dataloader(self) -> DataLoader:
        o, trainer = self.cfg.train, self.trainer
        assert trainer is not None
        batches = PositionBatches(
            o.batch_size,
            accumulate=o.accumulate,
            world=trainer.world_size,
            rank=trainer.global_rank,
            start_step=trainer.global_step,
            max_steps=o.max_steps,
        )
        return DataLoader(
            self.stream,
            batch_sampler=batches,
            num_workers=o.num_workers,
            persistent_workers=o.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )


class _Validate(L.Callback):
    """Validation every ``val_every`` optimizer steps and at the end (rank 0), written to the logger and to
    ``validation.jsonl``; the EMA identity carried in checkpoints."""

    def __init__(self, every: int, folder: Path, identity: dict[str, Any]) -> None:
        self.every, self.folder, self.identity = every, folder, identity
        self._done = -1

    def _run(self, trainer: L.Trainer, module: LmdmTraining) -> None:
        step = trainer.global_step
        if step == self._done or not trainer.is_global_zero:
            return
        self._done = step
        start = time.perf_counter()
        metrics = module.validate_now()
        if not metrics:
            return
        metrics["val/seconds"] = time.perf_counter() - start
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        with open(self.folder / "validation.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        log.info("step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step > 0 and trainer.global_step % self.every == 0:
            self._run(trainer, module)  # type: ignore[arg-type]

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._run(trainer, module)  # type: ignore[arg-type]

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint["ditto_identity"] = self.identity


def _loggers(cfg: TrainConfig, folder: Path) -> list[Any]:
    logger = cfg.logger
    if logger is None:
        return []
    if logger.name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        # one version_<n>/metrics.csv per attempt: a resumed run's log does not replace the first one's
        return [CSVLogger(logger.path or str(folder), name="csv")]
    from lightning.pytorch.loggers import WandbLogger
    from omegaconf import OmegaConf

    return [
        WandbLogger(
            project=logger.project,
            entity=logger.entity,
            group=logger.group,
            tags=list(logger.tags),
            save_dir=logger.dir or str(folder),
            mode=logger.wandb_mode,  # explicit: no login is attempted offline, whatever the folder's settings
            config=OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True),
        )
    ]


def run_training(cfg: TrainConfig, callbacks: Sequence[L.Callback] = ()) -> TrainResult:
    """Train as ``cfg`` says (see the module docstring); ``callbacks``: more Lightning callbacks (e.g. one
    that stops a run early, as a preempted job would be)."""
    started = time.perf_counter()
    o = cfg.train
    _check_devices(cfg)
    if o.warmup_steps > o.max_steps:
        log.warning(
            "train.warmup_steps=%d is longer than train.max_steps=%d: the warmup ends with the run",
            o.warmup_steps,
            o.max_steps,
        )
    dataset = PreparedDataset(cfg.data)
    split = split_by_video(dataset, o.val_fraction, o.seed)
    lmdm = build_lmdm(cfg)
    flags = condition_flags(cfg)
    if lmdm.cond_dim != cond_dim(flags):
        raise InputError(
            f"the initial LMDM takes conditions of width {lmdm.cond_dim} but motion.use_* give "
            f"{cond_dim(flags)}; set motion.use_emo / use_eye_open / use_eye_ball / use_sc as it was trained"
        )
    folder = _output_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    identity = _identity(cfg, lmdm)
    resume = _resume_path(cfg, folder)
    if resume is not None:
        _check_resume(resume, identity)
    train_clips = [dataset[i] for i in split.train]
    val_clips = [dataset[i] for i in split.val]
    stream = WindowStream(
        train_clips,
        seq_frames=lmdm.seq_frames,
        flags=flags,
        seed=o.seed,
        num_timesteps=int(lmdm.alphas_cumprod.shape[0]),
        cond_drop_prob=o.cond_drop_prob,
    )
    val_items = (
        _with_audio_rms(
            validation_items(
                val_clips, count=o.val_windows, seq_frames=lmdm.seq_frames, flags=flags, seed=o.seed
            ),
            val_clips,
        )
        if val_clips
        else []
    )
    log.info(
        "training on %d windows of %d clips, validating on %d windows of %d clips (videos held out: %s)",
        stream.num_windows,
        len(train_clips),
        len(val_items),
        len(val_clips),
        ", ".join(split.val_groups) or "none",
    )
    module = LmdmTraining(lmdm, o, cfg.sampler, val_items)
    from lightning.pytorch.callbacks import ModelCheckpoint

    checkpoints = ModelCheckpoint(
        dirpath=folder / "checkpoints",
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.trainer.ckpt_every,
        save_last=True,
        save_top_k=-1,
    )
    every: list[L.Callback] = [checkpoints, _Validate(o.val_every, folder, identity), *callbacks]
    if o.render_every:
        from ditto_research.train.render import RenderCallback

        every.append(RenderCallback(cfg, folder, val_clips))
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=cfg.trainer.devices,
        strategy=cfg.trainer.strategy,
        num_nodes=cfg.trainer.num_nodes,
        precision=cfg.trainer.precision,  # type: ignore[arg-type]
        max_steps=o.max_steps,
        max_epochs=-1,
        gradient_clip_val=o.grad_clip,
        gradient_clip_algorithm="norm",
        accumulate_grad_batches=o.accumulate,
        logger=_loggers(cfg, folder) or False,
        callbacks=every,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        default_root_dir=str(folder),
        deterministic=False,
    )
    trainer.fit(module, datamodule=_Data(stream, cfg), ckpt_path=str(resume) if resume else None)
    result = TrainResult(
        folder,
        None,
        trainer.global_step,
        dict(module.last_validation),
        time.perf_counter() - started,
        stream.num_windows,
        len(val_items),
        len(train_clips),
        len(val_clips),
    )
    if trainer.is_global_zero:
        result.lmdm_path = save_lmdm(module.weights(), folder / "lmdm.pth")
        summary = asdict(result) | {"output_dir": str(folder), "lmdm_path": str(result.lmdm_path)}
        (folder / "summary.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    return result


def _with_audio_rms(items: list[dict[str, Any]], clips: list[Any]) -> list[dict[str, Any]]:
    """Each validation item with its window's ``audio_rms`` rows (clips prepared with them)."""
    out = []
    for item in items:
        clip = clips[item["clip"]]
        if "audio_rms" in clip.arrays:
            f = item["frame"]
            item = {**item, "audio_rms": np.asarray(clip["audio_rms"][f : f + item["kp_seq"].shape[0]])}
        out.append(item)
    return out
