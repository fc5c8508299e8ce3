"""What an evaluation run records, and how it is written and read back.

Every run folder gets, whatever the logger:

==================  ========================================================================================
``results.json``    the :class:`RunRecord`: status / error, parameters, full config, run summary, and every
                    :class:`ClipResult` (per-stage latency, metrics, notes, per-frame online latencies)
``clips.csv``       one row per clip: :data:`CLIP_COLUMNS` (plus the run's parameters)
``stages.csv``      one row per clip and stage: ms per frame, per-call p50 / p95 / max
==================  ========================================================================================

:func:`find_runs` / :func:`load_run` read them back (the report and the notebooks use them).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ditto_research.atomic import write_text_atomically
from ditto_research.errors import InputError

__all__ = [
    "CLIP_COLUMNS",
    "RUN_SUMMARY_KEYS",
    "ClipResult",
    "RunRecord",
    "StageLatency",
    "clip_from_dict",
    "find_runs",
    "latest_sweep",
    "load_run",
    "stage_latency",
    "summarize_run",
    "write_run",
]

RESULTS_FILE = "results.json"
Status = Literal["ok", "failed", "interrupted"]

# Per-clip scalar metrics (None when not computed); the motion statistics come from
# ditto_research.evaluate.metrics.
SYNC_KEYS = ("lse_d", "lse_c", "av_offset", "proxy_corr", "proxy_offset")
# Against the clip's ground-truth video (evaluate.quality), when the dataset gives one.
QUALITY_KEYS = ("psnr", "ssim", "lpips", "lmd_mouth", "lmd_face", "csim")
MOTION_KEYS = (
    "lip_energy",
    "lip_velocity",
    "eye_energy",
    "eye_velocity",
    "pitch_range_deg",
    "yaw_range_deg",
    "roll_range_deg",
    "tx_range",
    "ty_range",
    "scale_range",
)
CLIP_COLUMNS = (
    "clip_id",
    "status",
    "error",
    "frames",
    "audio_s",
    "seconds",
    "fps",
    "render_fps",
    "rtf",
    "register_s",
    "first_frame_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "peak_rss_mb",
    *SYNC_KEYS,
    *QUALITY_KEYS,
    *MOTION_KEYS,
    "video",
    "source",
    "audio",
)
RUN_SUMMARY_KEYS = (
    "clips",
    "clips_ok",
    "clips_failed",
    "frames",
    "fps",
    "rtf",
    "load_s",
    "first_frame_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "peak_rss_mb",
    "peak_cuda_mb",
    "lse_d",
    "lse_c",
    "proxy_corr",
    "lip_energy",
    *QUALITY_KEYS,
    "fid",
    "fvd",
)


@dataclass
class StageLatency:
    """One stage's time: busy ms per output frame, and per ``process`` call percentiles (ms)."""

    stage: str
    calls: int
    ms_per_frame: float
    p50_ms: float
    p95_ms: float
    max_ms: float


def stage_latency(stage: str, call_seconds: Iterable[float], frames: int) -> StageLatency:
    """Summary of one stage from the wall time of each of its calls (seconds) over ``frames`` output
    frames."""
    values = np.asarray(list(call_seconds), dtype=np.float64) * 1000.0
    if values.size == 0:
        return StageLatency(stage, 0, 0.0, math.nan, math.nan, math.nan)
    p50, p95 = np.percentile(values, [50, 95])
    return StageLatency(
        stage,
        int(values.size),
        float(values.sum()) / max(frames, 1),
        float(p50),
        float(p95),
        float(values.max()),
    )


@dataclass
class ClipResult:
    """One clip of one run. ``metrics`` holds the scalar metrics; ``notes`` why a metric is missing."""

    clip_id: str
    source: str
    audio: str
    status: Status = "ok"
    error: str | None = None
    frames: int = 0
    audio_s: float = 0.0
    # Wall time from loading the audio to the closed video (registration included) and what it gives.
    seconds: float = 0.0
    fps: float = 0.0
    # Frames per second of the rendering loop alone (registration and muxing excluded).
    render_fps: float = 0.0
    rtf: float = 0.0
    register_s: float = 0.0
    # Offline: time from the start of rendering to the first frame; online: the first frame's latency.
    first_frame_ms: float | None = None
    # Online: per-frame latency (frame handed over - its audio had arrived), ms; offline: empty.
    frame_latency_ms: list[float] = field(default_factory=list)
    stages: list[StageLatency] = field(default_factory=list)
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    video: str | None = None
    samples: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        """The flat CSV row (:data:`CLIP_COLUMNS`)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name in CLIP_COLUMNS}
        latency = np.asarray(self.frame_latency_ms, dtype=np.float64)
        values["latency_p50_ms"] = float(np.percentile(latency, 50)) if latency.size else None
        values["latency_p95_ms"] = float(np.percentile(latency, 95)) if latency.size else None
        for key in (*SYNC_KEYS, *QUALITY_KEYS, *MOTION_KEYS):
            values[key] = self.metrics.get(key)
        return {key: values.get(key) for key in CLIP_COLUMNS}


@dataclass
class RunRecord:
    """One run (one configuration over the evaluation set)."""

    run_dir: str
    status: Status = "ok"
    error: str | None = None
    # The parameters a sweep varies (model, sampler, steps, mode, chunksize, backend, ...), flat.
    params: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    stages: list[StageLatency] = field(default_factory=list)
    clips: list[ClipResult] = field(default_factory=list)
    # Metrics that were not computed for the whole run and why (e.g. syncnet without weights).
    notes: dict[str, str] = field(default_factory=dict)
    logger_error: str | None = None
    system: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    finished: str = ""

    @property
    def failed_clips(self) -> list[ClipResult]:
        return [c for c in self.clips if c.status != "ok"]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["stages"] = [StageLatency(**s) for s in data.get("stages", [])]
        values["clips"] = [clip_from_dict(c) for c in data.get("clips", [])]
        return cls(**values)


def clip_from_dict(data: dict[str, Any]) -> ClipResult:
    """A ClipResult from its ``asdict`` form (JSON)."""
    names = {f.name for f in fields(ClipResult)}
    values = {k: v for k, v in data.items() if k in names}
    values["stages"] = [StageLatency(**s) for s in data.get("stages", [])]
    return ClipResult(**values)


def _mean(values: Iterable[float | int | None]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def summarize_run(
    record: RunRecord,
    stage_calls: dict[str, list[float]] | None,
    load_s: float | None,
    peak_rss_mb: float | None,
    peak_cuda_mb: float | None,
) -> dict[str, Any]:
    """Run-level numbers (:data:`RUN_SUMMARY_KEYS`) over the clips that succeeded; sets ``record.stages``.

    ``stage_calls``: every call time per stage over the run (pooled percentiles); None: the busy time per
    frame is combined from the clips' stage tables and the percentiles are left out.
    """
    ok = [c for c in record.clips if c.status == "ok"]
    frames = sum(c.frames for c in ok)
    seconds = sum(c.seconds for c in ok)
    audio_s = sum(c.audio_s for c in ok)
    latency = np.concatenate([np.asarray(c.frame_latency_ms, dtype=np.float64) for c in ok] or [np.zeros(0)])
    if stage_calls is not None and any(stage_calls.values()):
        record.stages = [stage_latency(name, calls, frames) for name, calls in stage_calls.items()]
    else:
        busy_ms: dict[str, float] = {}
        for clip in ok:
            for s in clip.stages:
                busy_ms[s.stage] = busy_ms.get(s.stage, 0.0) + s.ms_per_frame * clip.frames
        record.stages = [
            StageLatency(name, 0, total / max(frames, 1), math.nan, math.nan, math.nan)
            for name, total in busy_ms.items()
        ]
    summary = {
        "clips": len(record.clips),
        "clips_ok": len(ok),
        "clips_failed": len(record.clips) - len(ok),
        "frames": frames,
        "fps": frames / seconds if seconds > 0 else None,
        "rtf": seconds / audio_s if audio_s > 0 else None,
        "load_s": load_s,
        "first_frame_ms": _mean(c.first_frame_ms for c in ok),
        "latency_p50_ms": float(np.percentile(latency, 50)) if latency.size else None,
        "latency_p95_ms": float(np.percentile(latency, 95)) if latency.size else None,
        "peak_rss_mb": peak_rss_mb,
        "peak_cuda_mb": peak_cuda_mb,
    }
    for key in ("lse_d", "lse_c", "proxy_corr", "lip_energy", *QUALITY_KEYS):
        summary[key] = _mean(c.metrics.get(key) for c in ok)
    return summary


# ---- files -------------------------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: store it as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value


def write_run(record: RunRecord, run_dir: Path) -> Path:
    """Write ``results.json``, ``clips.csv`` and ``stages.csv`` into ``run_dir`` (each atomically); returns
    the JSON path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RESULTS_FILE
    text = json.dumps(_finite_or_none(asdict(record)), indent=1, default=_json_default)
    params = sorted(record.params)

    def clips_csv(f: Any) -> None:
        writer = csv.writer(f)
        writer.writerow([*params, *CLIP_COLUMNS])
        for clip in record.clips:
            row = clip.row()
            writer.writerow([record.params[p] for p in params] + [_cell(row[c]) for c in CLIP_COLUMNS])

    def stages_csv(f: Any) -> None:
        writer = csv.writer(f)
        writer.writerow(["clip_id", "stage", "calls", "ms_per_frame", "p50_ms", "p95_ms", "max_ms"])
        for clip_id, stages in [("(all)", record.stages)] + [(c.clip_id, c.stages) for c in record.clips]:
            for s in stages:
                writer.writerow(
                    [
                        clip_id,
                        s.stage,
                        s.calls,
                        *(_cell(v) for v in (s.ms_per_frame, s.p50_ms, s.p95_ms, s.max_ms)),
                    ]
                )

    write_text_atomically(run_dir / "clips.csv", clips_csv)
    write_text_atomically(run_dir / "stages.csv", stages_csv)
    write_text_atomically(path, lambda f: f.write(text))
    return path


def _cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def load_run(path: str | Path) -> RunRecord:
    """A run from its folder or its ``results.json``."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise InputError(
            f"{path} has no {RESULTS_FILE}: give a folder written by python -m ditto_research.evaluate.run"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(
            f"{file} is not valid JSON ({e.msg} at line {e.lineno}); was the run interrupted?"
        ) from e
    record = RunRecord.from_dict(data)
    record.run_dir = str(file.parent)
    return record


def find_runs(path: str | Path) -> list[RunRecord]:
    """Every run under ``path`` (a run folder, or a sweep folder holding one folder per run), in job order."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(
            f"{path} is not a folder: give a run or sweep folder written by python -m "
            "ditto_research.evaluate.run"
        )
    files = sorted(root.rglob(RESULTS_FILE), key=lambda p: _natural_key(p.relative_to(root)))
    if not files:
        raise InputError(
            f"no {RESULTS_FILE} under {path}: give a run or sweep folder written by "
            "python -m ditto_research.evaluate.run"
        )
    return [load_run(f) for f in files]


def _natural_key(path: Path) -> list[Any]:
    """Sort 2/ before 10/ (Hydra numbers the jobs of a sweep)."""
    return [int(part) if part.isdigit() else part for part in path.parts]


def latest_sweep(folder: str | Path) -> Path:
    """``folder`` when it holds runs (its own results.json or its jobs'), else its newest (by name) subfolder:
    ``latest_sweep("outputs/evaluate/multirun")`` is the last sweep."""
    root = Path(folder)
    if (root / RESULTS_FILE).is_file() or any(root.glob(f"*/{RESULTS_FILE}")):
        return root
    subfolders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    if not subfolders:
        raise InputError(
            f"no runs in {folder}: run python -m ditto_research.evaluate.run -m ... first, or give a sweep "
            "folder"
        )
    return max(subfolders, key=lambda p: p.name)
