"""Experiment loggers: where a run's numbers go besides its own results.json / clips.csv / stages.csv.

=============  ==============================================================================================
``null``       nothing more (:class:`NullLogger`)
``csv``        one summary row per run appended to a shared CSV, ``<sweep dir>/runs.csv`` by default
               (:class:`CsvLogger`; the file is locked while writing, so parallel jobs are safe)
``wandb``      Weights & Biases (:class:`WandbLogger`): config, per-clip metrics as history, the clip and
               per-stage latency tables, sample frames and videos, the run summary. **Offline by default**
               (no account, no network); its files stay in the run folder: ``wandb sync DIR`` uploads later.
=============  ==============================================================================================

:func:`make_logger` raises :class:`~ditto_research.errors.ConfigError` (wandb not installed, folder not
writable, wandb failing to start); the caller still writes the local results and reports the error.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from ditto_research.errors import ConfigError
from ditto_research.evaluate.config import LoggerConfig
from ditto_research.evaluate.results import CLIP_COLUMNS, RUN_SUMMARY_KEYS, ClipResult, RunRecord

__all__ = ["CsvLogger", "ExperimentLogger", "NullLogger", "WandbLogger", "make_logger"]

WANDB_HINT = "pip install 'ditto-research[wandb]' (or: pip install 'wandb<0.29')"


class ExperimentLogger(Protocol):
    """Receives a run as it goes: start, each clip, the end."""

    def start(self, record: RunRecord) -> None: ...

    def log_clip(self, index: int, clip: ClipResult) -> None: ...

    def finish(self, record: RunRecord) -> None: ...


class NullLogger:
    """``logger=null``: the local results files are all there is."""

    def start(self, record: RunRecord) -> None:
        return None

    def log_clip(self, index: int, clip: ClipResult) -> None:
        return None

    def finish(self, record: RunRecord) -> None:
        return None


def _check_writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"{what} {folder} is not writable ({e.strerror or e}); choose another folder") from e


class CsvLogger:
    """Appends one row per run (parameters + :data:`RUN_SUMMARY_KEYS` + status) to a shared CSV file."""

    def __init__(self, path: Path) -> None:
        _check_writable(path.parent, "logger.path folder")
        self.path = path

    def start(self, record: RunRecord) -> None:
        return None

    def log_clip(self, index: int, clip: ClipResult) -> None:
        return None

    def finish(self, record: RunRecord) -> None:
        row: dict[str, Any] = {"run_dir": record.run_dir, "status": record.status, "error": record.error or ""}
        row.update({f"param.{k}": v for k, v in sorted(record.params.items())})
        row.update({k: record.summary.get(k) for k in RUN_SUMMARY_KEYS})
        with self.path.open("a+", newline="", encoding="utf-8") as f:
            _lock(f)
            f.seek(0)
            existing = next(csv.reader(f), None)
            columns = [c for c in existing if c != "extra"] if existing else list(row)
            # A parameter that earlier rows did not have is kept in a trailing "extra" cell, not dropped.
            extra = {k: v for k, v in row.items() if k not in columns}
            f.seek(0, os.SEEK_END)
            writer = csv.writer(f)
            if existing is None:
                writer.writerow([*columns, "extra"])
            writer.writerow([_cell(row.get(c)) for c in columns] + [repr(extra) if extra else ""])


def _lock(f: Any) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; single-process runs are still fine
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


class WandbLogger:
    """Weights & Biases, offline unless ``logger.mode=online``; run files under ``dir`` (the run folder)."""

    def __init__(self, cfg: LoggerConfig, directory: Path, name: str, group: str | None) -> None:
        try:
            import wandb
        except ImportError as e:
            raise ConfigError(f"logger=wandb needs the wandb package: {WANDB_HINT}; or use logger=csv / "
                              "logger=null") from e
        _check_writable(directory, "the W&B folder (logger.dir)")
        self.wandb = wandb
        self.cfg = cfg
        self.directory = directory
        self.name = name
        self.group = cfg.group or group
        self.run: Any = None

    def start(self, record: RunRecord) -> None:
        # W&B reads these folders from the environment only; keep its cache and staging inside the run folder
        # unless the user chose otherwise.
        for key, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                         ("WANDB_ARTIFACT_DIR", "artifacts"), ("WANDB_CONFIG_DIR", "config")):
            os.environ.setdefault(key, str(self.directory / "wandb" / sub))
        try:
            self.run = self.wandb.init(
                project=self.cfg.project, entity=self.cfg.entity, group=self.group, name=self.name,
                tags=list(self.cfg.tags) or None, job_type="evaluate", dir=str(self.directory),
                mode=self.cfg.mode,  # type: ignore[arg-type]  # validated by LoggerConfig
                config={"params": record.params, **record.config}, reinit="finish_previous",
            )
        except Exception as e:  # wandb raises its own types (UsageError, CommError, ...) and OSErrors
            raise ConfigError(f"W&B could not start ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                              f"; local results are still written. Check logger.mode / logger.dir") from e

    def log_clip(self, index: int, clip: ClipResult) -> None:
        if self.run is None:
            return
        row: dict[str, Any] = {f"clip/{k}": v for k, v in clip.row().items() if isinstance(v, (int, float))}
        row["clip/index"] = index
        if self.cfg.log_media and clip.status == "ok":
            if clip.samples:
                row["clip/frames"] = [self.wandb.Image(p, caption=f"{clip.clip_id} {Path(p).stem}") for p in clip.samples]
            if clip.video:
                row["clip/video"] = self.wandb.Video(clip.video, caption=clip.clip_id, format="mp4")
        self.run.log(row, step=index)

    def finish(self, record: RunRecord) -> None:
        if self.run is None:
            return
        clip_rows = [c.row() for c in record.clips]
        self.run.log({
            "clips": self.wandb.Table(columns=list(CLIP_COLUMNS), data=[[r[c] for c in CLIP_COLUMNS] for r in clip_rows]),
            "stage_latency": self.wandb.Table(
                columns=["clip_id", "stage", "calls", "ms_per_frame", "p50_ms", "p95_ms", "max_ms"],
                data=[[cid, s.stage, s.calls, s.ms_per_frame, s.p50_ms, s.p95_ms, s.max_ms]
                      for cid, stages in [("(all)", record.stages)] + [(c.clip_id, c.stages) for c in record.clips]
                      for s in stages]),
        })
        summary = {k: v for k, v in record.summary.items() if v is not None}
        summary.update({f"stage/{s.stage}_ms_per_frame": s.ms_per_frame for s in record.stages})
        summary["status"] = record.status
        if record.error:
            summary["error"] = record.error
        self.run.summary.update(summary)
        self.run.finish(exit_code=0 if record.status == "ok" else 1)
        self.run = None


def make_logger(cfg: LoggerConfig | None, output_dir: Path, *, run_name: str, sweep_dir: Path | None) -> ExperimentLogger:
    """The logger ``cfg`` names (NullLogger for ``logger=null``); ConfigError when it cannot work."""
    if cfg is None:
        return NullLogger()
    if cfg.name == "csv":
        default = (sweep_dir if sweep_dir is not None else output_dir) / "runs.csv"
        return CsvLogger(Path(cfg.path) if cfg.path else default)
    directory = Path(cfg.dir) if cfg.dir else output_dir
    group = sweep_dir.name if sweep_dir is not None else None
    return WandbLogger(cfg, directory, run_name, group)
