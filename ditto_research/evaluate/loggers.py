"""Experiment loggers: where a run's numbers go besides its own results.json / clips.csv / stages.csv.

=============  ==============================================================================================
``wandb``      the default. Weights & Biases (:class:`WandbLogger`): config, per-clip metrics as history, the
               clip and per-stage latency tables, sample frames and videos, the run summary. **Offline**
               unless ``logger.mode=online`` or ``WANDB_MODE=online`` (no account, no network); its files
               stay in the run folder: ``wandb sync DIR`` uploads later.
``csv``        one summary row per run appended to a shared CSV, ``<sweep dir>/runs.csv`` by default
               (:class:`CsvLogger`; the file is locked while writing, so parallel jobs are safe)
``none``       nothing more (:class:`NullLogger`)
=============  ==============================================================================================

:func:`make_logger` and ``start`` raise :class:`~ditto_research.errors.ConfigError` (wandb failing to import
or to start, a folder that is not writable) with one line that ends in what to do; the caller still writes
the local results and reports the error.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Protocol

from ditto_research.cache import folder_write_error
from ditto_research.errors import ConfigError
from ditto_research.evaluate.config import LoggerConfig
from ditto_research.evaluate.results import CLIP_COLUMNS, RUN_SUMMARY_KEYS, ClipResult, RunRecord
from ditto_research.user_files import decode_text, parse_csv

__all__ = ["CsvLogger", "ExperimentLogger", "NullLogger", "WandbLogger", "make_logger"]

# wandb is a dependency of ditto-research (pyproject.toml); an import failure means a broken or replaced
# installation.
WANDB_HINT = "reinstall it with `pip install 'wandb>=0.28'` (what ditto-research asks for)"
OTHER_LOGGERS = "or use logger=csv (results.json / clips.csv are written either way)"
# W&B reads these folders from the environment only: they go inside the run folder unless the user set them.
WANDB_FOLDERS = (
    ("WANDB_CACHE_DIR", "cache"),
    ("WANDB_DATA_DIR", "data"),
    ("WANDB_ARTIFACT_DIR", "artifacts"),
    ("WANDB_CONFIG_DIR", "config"),
)


class ExperimentLogger(Protocol):
    """Receives a run as it goes: start, each clip, the end."""

    def start(self, record: RunRecord) -> None: ...

    def log_clip(self, index: int, clip: ClipResult) -> None: ...

    def finish(self, record: RunRecord) -> None: ...


class NullLogger:
    """``logger=none``: the local results files are all there is."""

    def start(self, record: RunRecord) -> None:
        return None

    def log_clip(self, index: int, clip: ClipResult) -> None:
        return None

    def finish(self, record: RunRecord) -> None:
        return None


def _check_writable(folder: Path, what: str) -> None:
    error = folder_write_error(folder)
    if error is not None:
        raise ConfigError(
            f"{what} {folder} is not writable ({error.strerror or error}); choose another folder"
        ) from error


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
        row: dict[str, Any] = {
            "run_dir": record.run_dir,
            "status": record.status,
            "error": record.error or "",
        }
        row.update({f"param.{k}": v for k, v in sorted(record.params.items())})
        row.update({k: record.summary.get(k) for k in RUN_SUMMARY_KEYS})
        with self.path.open("a+b") as f:  # bytes: the header is decoded like every CSV we read
            _lock(f)
            f.seek(0)
            first, label = f.readline(), f"logger.path {self.path}"
            existing = parse_csv(decode_text(first, label), label)[0] if first else None
            columns = [c for c in existing if c != "extra"] if existing else list(row)
            # A parameter that earlier rows did not have is kept in a trailing "extra" cell, not dropped.
            extra = {k: v for k, v in row.items() if k not in columns}
            lines = io.StringIO()
            writer = csv.writer(lines)
            if existing is None:
                writer.writerow([*columns, "extra"])
            writer.writerow([_cell(row.get(c)) for c in columns] + [repr(extra) if extra else ""])
            f.seek(0, os.SEEK_END)
            f.write(lines.getvalue().encode("utf-8"))


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
    """Weights & Biases in :attr:`LoggerConfig.wandb_mode` (offline by default); run files under ``dir`` (the
    run folder), W&B's cache and staging folders too unless the environment names others."""

    def __init__(
        self, cfg: LoggerConfig, directory: Path, name: str, group: str | None, *, verbose: bool = False
    ) -> None:
        try:
            import wandb
        except Exception as e:  # ImportError, or a dependency clash raised while wandb imports (protobuf)
            raise ConfigError(
                f"logger=wandb: the wandb package does not import ({_describe(e)}): {WANDB_HINT}, "
                f"{OTHER_LOGGERS}"
            ) from e
        try:
            _check_writable(directory, "the W&B folder (logger.dir)")
        except ConfigError as e:
            raise ConfigError(f"logger=wandb: {e}, {OTHER_LOGGERS}") from e
        self.wandb = wandb
        self.cfg = cfg
        self.directory = directory
        self.name = name
        self.group = cfg.group or group
        self.mode = cfg.wandb_mode
        self.verbose = verbose
        self.run: Any = None
        self._environ: dict[str, str | None] = {}  # the W&B folder variables as they were before start()

    def start(self, record: RunRecord) -> None:
        for key, sub in WANDB_FOLDERS:
            self._environ[key] = os.environ.get(key)
            if self._environ[key] is None:
                os.environ[key] = str(self.directory / "wandb" / sub)
        try:
            self.run = self.wandb.init(
                project=self.cfg.project,
                entity=self.cfg.entity,
                group=self.group,
                name=self.name,
                tags=list(self.cfg.tags) or None,
                job_type="evaluate",
                dir=str(self.directory),
                mode=self.mode,  # type: ignore[arg-type]  # LoggerConfig checked it (or it came from WANDB_MODE)
                config={"params": record.params, **record.config},
                reinit="finish_previous",
                # quiet: the run folder and mode only, not the history and summary dump at the end
                settings=self.wandb.Settings(quiet=not self.verbose),
            )
        except Exception as e:  # wandb raises its own types (UsageError, CommError, ...) and OSErrors
            self._restore_environ()
            login = " (run `wandb login` first)" if self.mode == "online" else ""
            raise ConfigError(
                f"logger=wandb: W&B could not start in mode {self.mode} ({_describe(e)}): "
                f"check logger.mode / logger.dir{login}, {OTHER_LOGGERS}"
            ) from e

    def _restore_environ(self) -> None:
        for key, value in self._environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._environ.clear()

    def log_clip(self, index: int, clip: ClipResult) -> None:
        if self.run is None:
            return
        row: dict[str, Any] = {f"clip/{k}": v for k, v in clip.row().items() if isinstance(v, (int, float))}
        row["clip/index"] = index
        if self.cfg.log_media and clip.status == "ok":
            if clip.samples:
                row["clip/frames"] = [
                    self.wandb.Image(p, caption=f"{clip.clip_id} {Path(p).stem}") for p in clip.samples
                ]
            if clip.video:
                row["clip/video"] = self.wandb.Video(clip.video, caption=clip.clip_id, format="mp4")
        self.run.log(row, step=index)

    def finish(self, record: RunRecord) -> None:
        if self.run is None:
            return
        clip_rows = [c.row() for c in record.clips]
        self.run.log(
            {
                "clips": self.wandb.Table(
                    columns=list(CLIP_COLUMNS), data=[[r[c] for c in CLIP_COLUMNS] for r in clip_rows]
                ),
                "stage_latency": self.wandb.Table(
                    columns=["clip_id", "stage", "calls", "ms_per_frame", "p50_ms", "p95_ms", "max_ms"],
                    data=[
                        [cid, s.stage, s.calls, s.ms_per_frame, s.p50_ms, s.p95_ms, s.max_ms]
                        for cid, stages in [("(all)", record.stages)]
                        + [(c.clip_id, c.stages) for c in record.clips]
                        for s in stages
                    ],
                ),
            }
        )
        summary = {k: v for k, v in record.summary.items() if v is not None}
        summary.update({f"stage/{s.stage}_ms_per_frame": s.ms_per_frame for s in record.stages})
        summary["status"] = record.status
        if record.error:
            summary["error"] = record.error
        self.run.summary.update(summary)
        try:
            self.run.finish(exit_code=0 if record.status == "ok" else 1)
        finally:
            self.run = None
            self._restore_environ()


def _describe(error: BaseException) -> str:
    """``Type: first line of the message`` of an exception, for one-line errors."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def make_logger(
    cfg: LoggerConfig | None,
    output_dir: Path,
    *,
    run_name: str,
    sweep_dir: Path | None,
    verbose: bool = False,
) -> ExperimentLogger:
    """The logger ``cfg`` names (NullLogger for ``logger=none``); ConfigError when it cannot work.
    ``verbose``: W&B prints its whole console summary (otherwise only where the run went)."""
    if cfg is None:
        return NullLogger()
    if cfg.name == "csv":
        default = (sweep_dir if sweep_dir is not None else output_dir) / "runs.csv"
        return CsvLogger(Path(cfg.path) if cfg.path else default)
    directory = Path(cfg.dir) if cfg.dir else output_dir
    group = sweep_dir.name if sweep_dir is not None else None
    return WandbLogger(cfg, directory, run_name, group, verbose=verbose)
