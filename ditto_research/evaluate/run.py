"""``python -m ditto_research.evaluate.run [dataset=FILE] [group=option ...]`` — one configuration over an
evaluation set; ``python -m ditto_research.evaluate.run -m key=a,b ...`` (or ``sweep=NAME``) — one run per
combination.

Per run (its folder is Hydra's run directory, or ``<sweep dir>/<job number>`` in a sweep) it writes
``results.json``, ``clips.csv`` and ``stages.csv`` (:mod:`ditto_research.evaluate.results`), the videos and
sample frames, and hands the numbers to the logger (:mod:`ditto_research.evaluate.loggers`). After a single
run, or once after a sweep, ``report.md`` / ``report.html`` are written
(:mod:`ditto_research.evaluate.report`).

Failures: bad evaluation inputs (a missing dataset file, a clip file that does not exist, SyncNet weights of
the wrong format) stop before anything runs, with one line and exit code 2. A configuration that cannot run
(invalid for its sampler, missing checkpoints, mode or backend not available) and a clip that fails are
recorded in results.json with their error; a sweep goes on with the next run / clip, and the report lists
them. A single failed run exits with code 2 after writing its results. So does a run whose logger failed
(W&B, the default, not importing or not starting; a folder that is not writable): its local results are
complete, and one ``error: logger: ...`` line says what failed and what to do (often: ``logger=csv``).
Anything else is a bug: its traceback, a line saying so, exit code 1 (:mod:`ditto_research.apps`).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from ditto_research.apps import HydraApp
from ditto_research.config import compose, to_config
from ditto_research.errors import ConfigError, DittoError
from ditto_research.evaluate.config import EvaluateConfig, register_evaluate_configs
from ditto_research.evaluate.dataset import Clip, load_dataset, source_frames, trim_audio
from ditto_research.evaluate.loggers import ExperimentLogger, NullLogger, make_logger
from ditto_research.evaluate.measure import (
    ClipContext,
    describe_error,
    evaluate_clip,
    peak_rss_mb,
    reset_peak_rss,
)
from ditto_research.evaluate.quality import QualityScorers, SetStats
from ditto_research.evaluate.results import ClipResult, RunRecord, summarize_run, write_run
from ditto_research.interrupts import Interrupted
from ditto_research.logs import configure_logging

__all__ = ["APP", "ReportCallback", "evaluate_from_overrides", "main", "run_evaluation"]

log = logging.getLogger(__name__)
register_evaluate_configs()

# A stop keeps the finished runs and records the stopped one (run_evaluation's own bookkeeping).
APP = HydraApp("evaluate", stopped="finished runs are kept; the stopped run is recorded as interrupted")

# Flat parameter name -> config key: what the report groups and plots runs by.
PARAM_KEYS = {
    "model": "model.name",
    "backend": "backend.name",
    "device": "backend.device",
    "precision": "backend.precision",
    "mode": "mode.name",
    "chunksize": "mode.chunksize",
    "realtime": "mode.realtime",
    "sampler": "sampler.name",
    "steps": "sampler.steps",
    "eta": "sampler.eta",
    "guidance": "sampler.guidance_scale",
    "face": "face.name",
    "audio_encoder": "audio_encoder.name",
    "seed": "control.seed",
    "dataset": "dataset",
    "max_seconds": "max_seconds",
}


@dataclass(frozen=True)
class HydraContext:
    """Where Hydra put this job, if Hydra runs it."""

    run_dir: Path | None = None
    sweep_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)

    @classmethod
    def current(cls) -> HydraContext:
        if not HydraConfig.initialized():
            return cls()
        hc = HydraConfig.get()
        sweep = Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
        return cls(Path(hc.runtime.output_dir), sweep, list(hc.overrides.task))


def run_params(cfg: DictConfig) -> dict[str, Any]:
    """The flat parameters of a composed config (readable even when the config does not validate)."""
    params = {}
    for name, key in PARAM_KEYS.items():
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        params[name] = str(list(value)) if OmegaConf.is_list(value) else value
    return params


def system_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def run_evaluation(cfg: DictConfig, output_dir: str | Path | None = None) -> RunRecord:
    """Run one configuration over its evaluation set and write the results (see the module docstring).

    Raises DittoError only for bad evaluation inputs (dataset, SyncNet weights); everything else is recorded.
    """
    context = HydraContext.current()
    chosen = output_dir or OmegaConf.select(cfg, "output_dir", default=None) or context.run_dir
    out = (
        Path(chosen) if chosen else Path("outputs/evaluate") / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    )
    out.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    record = RunRecord(
        run_dir=str(out),
        params=run_params(cfg),
        overrides=context.overrides,
        config={str(k): v for k, v in config.items()} if isinstance(config, dict) else {},
        system=system_info(),
        started=_now(),
    )
    try:
        typed = to_config(cfg, EvaluateConfig)
    except ConfigError as e:
        return _fail(record, e, out, NullLogger())
    configure_logging(typed.verbose)
    record.params = run_params(OmegaConf.structured(typed))  # with the defaults validation filled in
    clips = prepare_clips(typed, out)
    syncnet = _load_syncnet(typed, record)
    quality = _load_quality(typed, clips, record)
    logger = _start_logger(typed, record, out, context)
    ctx = ClipContext(typed, out, syncnet, quality, SetStats() if quality is not None else None)
    if typed.executor == "lightning":
        from ditto_research.evaluate.lightning import predict_clips

        try:
            results = predict_clips(typed, clips, ctx)
        except DittoError as e:
            return _fail(record, e, out, logger)
        if results is None:  # a non-zero rank of a multi-process run: rank 0 writes the results
            return record
        record.clips, load_s = results
        stage_calls: dict[str, list[float]] | None = None
    else:
        try:
            load_s, stage_calls = _run_clips(typed, clips, ctx, record, logger)
        except DittoError as e:
            return _fail(record, e, out, logger)
        except (KeyboardInterrupt, Interrupted) as e:
            # The clips that finished are kept, recorded complete; the one in progress left nothing behind.
            record.status, record.finished = "interrupted", _now()
            record.error = f"{e or 'interrupted'} after {len(record.clips)} of {len(clips)} clips"
            write_run(record, out)
            _finish_logger(logger, record)
            raise
    peaks = [c.peak_rss_mb for c in record.clips if c.peak_rss_mb is not None]
    record.summary = summarize_run(
        record, stage_calls, load_s, max(peaks) if peaks else peak_rss_mb(), _peak_cuda_mb()
    )
    if ctx.set_stats is not None and quality is not None:
        for name, scorer, measure in (
            ("fid", quality.inception, ctx.set_stats.fid),
            ("fvd", quality.i3d, ctx.set_stats.fvd),
        ):
            value, why = measure() if scorer is not None else (None, quality.unavailable()[name])
            record.summary[name] = value
            if why:
                record.notes[name] = why
    if record.clips and not any(c.status == "ok" for c in record.clips):
        record.status, record.error = "failed", f"every clip failed (first: {record.clips[0].error})"
    record.finished = _now()
    write_run(record, out)
    _finish_logger(logger, record)
    return record


def prepare_clips(cfg: EvaluateConfig, out: Path) -> list[Clip]:
    """The evaluation set, checked (InputError before anything runs), audio cut to ``max_seconds``; real
    talking videos (a ``video`` column) get their first frame as the source."""
    clips = source_frames(load_dataset(cfg.dataset, max_clips=cfg.max_clips), out / "inputs")
    if cfg.max_seconds is not None:
        clips = [trim_audio(clip, cfg.max_seconds, out / "inputs") for clip in clips]
    return clips


def _load_syncnet(cfg: EvaluateConfig, record: RunRecord):
    """SyncNet with the user's weights (CheckpointError for a wrong file), or None with a note."""
    if not cfg.uses("syncnet"):
        return None
    if not cfg.syncnet_weights:
        record.notes["syncnet"] = (
            "skipped: no weights; pass syncnet_weights=PATH to syncnet_v2.model from "
            "joonson/syncnet_python (its download_model.sh)"
        )
        log.warning("syncnet %s", record.notes["syncnet"])
        return None
    from ditto_research.evaluate.metrics.syncnet import load_syncnet

    return load_syncnet(cfg.syncnet_weights)


def _load_quality(cfg: EvaluateConfig, clips: list[Clip], record: RunRecord) -> QualityScorers | None:
    """The quality scorers (their weights checked now: InputError) when metric ``quality`` is selected and a
    clip has a reference video; None with a run note otherwise."""
    if not cfg.uses("quality"):
        return None
    if not any(clip.reference is not None for clip in clips):
        record.notes["quality"] = (
            "skipped: no clip has a reference video (dataset columns reference or video)"
        )
        return None
    scorers = QualityScorers.from_files(
        inception=cfg.inception_weights,
        i3d=cfg.i3d_weights,
        lpips=cfg.lpips_weights,
        arcface=cfg.arcface_weights,
        fid_stride=cfg.fid_stride,
    )
    for name, why in scorers.unavailable().items():
        if name in ("fid", "fvd", "lpips", "csim"):
            record.notes[name] = why
    return scorers


def _start_logger(
    cfg: EvaluateConfig, record: RunRecord, out: Path, context: HydraContext
) -> ExperimentLogger:
    """The configured logger, started; on failure the error is recorded and a NullLogger stands in."""
    name = out.name if context.sweep_dir is None else f"{context.sweep_dir.name}/{out.name}"
    try:
        logger = make_logger(cfg.logger, out, run_name=name, sweep_dir=context.sweep_dir, verbose=cfg.verbose)
        logger.start(record)
        return logger
    except DittoError as e:
        record.logger_error = str(e)
        log.error("logger: %s (local results are still written to %s)", e, out)
        return NullLogger()


def _finish_logger(logger: ExperimentLogger, record: RunRecord) -> None:
    try:
        logger.finish(record)
    except Exception as e:  # noqa: BLE001 - the local results are written already; say what went wrong
        record.logger_error = describe_error(e)
        log.error("logger failed at the end of the run: %s", record.logger_error)
        write_run(record, Path(record.run_dir))


def _run_clips(
    cfg: EvaluateConfig, clips: list[Clip], ctx: ClipContext, record: RunRecord, logger: ExperimentLogger
) -> tuple[float, dict[str, list[float]]]:
    """Load the networks once and evaluate every clip; returns (load seconds, per-stage call times)."""
    from ditto_research.checkpoints import check_root
    from ditto_research.evaluate.generate import make_renderer
    from ditto_research.pipeline.run import required_checkpoint_parts

    parts = required_checkpoint_parts(cfg)
    if parts:
        check_root(cfg.model.checkpoint_root, parts, lmdm_file=cfg.model.lmdm_file)
    gc.collect()  # a sweep's earlier runs ran in this process (basic launcher): free what they left first
    _reset_cuda_peak()
    reset_peak_rss()
    try:
        renderer = make_renderer(cfg)
    except DittoError:
        raise
    except Exception as e:
        raise ConfigError(f"the pipeline could not be built: {describe_error(e)}") from e
    stage_calls: dict[str, list[float]] = {}
    try:
        for index, clip in enumerate(clips):
            log.info("clip %d/%d: %s", index + 1, len(clips), clip.clip_id)
            result, gen = evaluate_clip(renderer, clip, ctx)
            record.clips.append(result)
            if gen is not None:
                for name, calls in gen.report.stage_calls_s.items():
                    stage_calls.setdefault(name, []).extend(calls)
            _log_clip(logger, index, result, record)
    finally:
        renderer.close()
    return renderer.load_s, stage_calls


def _log_clip(logger: ExperimentLogger, index: int, result: ClipResult, record: RunRecord) -> None:
    try:
        logger.log_clip(index, result)
    except Exception as e:  # noqa: BLE001 - logging must not stop the evaluation
        record.logger_error = describe_error(e)
        log.error("logger failed on clip %s: %s", result.clip_id, record.logger_error)


def _reset_cuda_peak() -> None:
    from ditto_research.evaluate.metrics.latency import reset_peak_cuda_memory

    reset_peak_cuda_memory()


def _peak_cuda_mb() -> float | None:
    from ditto_research.evaluate.metrics.latency import peak_cuda_memory_bytes

    peak = peak_cuda_memory_bytes()
    return peak / 2**20 if peak is not None else None


def _fail(record: RunRecord, error: DittoError, out: Path, logger: ExperimentLogger) -> RunRecord:
    record.status, record.error, record.finished = "failed", str(error), _now()
    log.error("run failed: %s", error)
    write_run(record, out)
    _finish_logger(logger, record)
    return record


def evaluate_from_overrides(
    overrides: list[str] | None = None, output_dir: str | Path | None = None
) -> RunRecord:
    """The Python API: compose ``conf/evaluate.yaml`` with overrides and run it (no Hydra run folder)."""
    register_evaluate_configs()
    return run_evaluation(compose("evaluate", overrides), output_dir)


class ReportCallback(Callback):
    """Writes report.md / report.html once a sweep has finished (single runs write theirs in :func:`main`)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        if config.get("report", True):
            _write_report(sweep)
        from ditto_research.evaluate.results import find_runs

        try:
            runs = find_runs(sweep)
        except DittoError:
            return
        _report_failed_clips(runs, bool(config.get("strict", False)))


def _write_report(folder: Path) -> None:
    from ditto_research.evaluate.report import use_file_backend, write_report

    try:
        use_file_backend()
        paths = write_report(folder)
        print(f"report: {paths[0]}")
    except Exception as e:
        log.error(
            "could not write the report for %s: %s",
            folder,
            describe_error(e),
            exc_info=not isinstance(e, DittoError),
        )


@APP.main
def main(cfg: DictConfig) -> None:
    record = run_evaluation(cfg)  # a DittoError (bad evaluation inputs): one line and exit 2, by the shell
    if not record.started or not record.finished:
        return  # a non-zero rank of a multi-process Lightning run
    ok = sum(c.status == "ok" for c in record.clips)
    print(
        f"{record.run_dir}: {record.status}, {ok}/{len(record.clips)} clips ok"
        + (f", {record.summary['fps']:.2f} fps" if record.summary.get("fps") else "")
    )
    if record.logger_error:
        print(f"error: logger: {record.logger_error}", file=sys.stderr)
    if HydraContext.current().sweep_dir is not None:
        return  # a sweep goes on; its failures are in the results and the report
    if cfg.get("report", True):
        _write_report(Path(record.run_dir))
    if record.status == "failed":
        print(f"error: {record.error}", file=sys.stderr)
    if record.status == "failed" or record.logger_error:
        sys.exit(2)
    _report_failed_clips([record], bool(cfg.get("strict", False)))


def _report_failed_clips(records: list[RunRecord], strict: bool) -> None:
    """The last line when clips failed; exit 2 with ``strict``."""
    clips = [c for r in records for c in r.clips]
    failed = sum(c.status != "ok" for c in clips)
    if not failed:
        return
    where = records[0].run_dir if len(records) == 1 else "each run's results.json"
    print(
        f"{'error' if strict else 'warning'}: {failed} of {len(clips)} clips failed (errors in {where})"
        + ("" if strict else "; pass strict=true to exit non-zero when a clip fails"),
        file=sys.stderr,
    )
    if strict:
        sys.exit(2)


if __name__ == "__main__":
    APP.run(main)  # SIGTERM / SIGHUP stop a sweep cleanly: finished runs kept, no partial files
