"""``python -m ditto_research.evaluate.score dataset=LIST.csv output_dir=DIR``: score existing videos — any
system's — against their ground truth with the metrics papers report (:mod:`ditto_research.evaluate.quality`).

LIST.csv: ``prediction`` and ``reference`` columns (video paths, relative to the list), optional ``id``,
``source`` (the identity image for CSIM; default the reference's first frame) and ``audio`` (the speech for
the lip-sync metrics; default the prediction's track, else the reference's).

DIR gets ``clips.csv`` (one row per clip: every metric, an empty cell where it is n/a and the reason in
``notes``), ``results.json`` (the set: FID, FVD, each metric's mean with its 95 % interval; every clip) and
``report.md`` (the papers' table layout, with the published Ditto row beside ours). A clip that cannot be
scored (a missing file, lengths or shapes that do not match) is one line and a failed row; the run goes on and
its last line says how many failed (all failed: exit 2).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from ditto_research.apps import HydraApp
from ditto_research.atomic import write_text_atomically
from ditto_research.errors import ConfigError, DittoError, InputError
from ditto_research.evaluate.config import LoggerConfig
from ditto_research.evaluate.quality import (
    CLIP_METRICS,
    QualityScorers,
    SetStats,
    mean_with_interval,
    score_pair,
)
from ditto_research.user_files import column_problems, list_path, read_csv

log = logging.getLogger(__name__)

__all__ = ["APP", "ScoreConfig", "ScoreRow", "read_score_list", "run_scoring"]

# SoulX-FlashHead (2025), Table 3: HDTF, 75 clips, self-reconstruction; the table researchers quote for Ditto.
PUBLISHED = {
    "source": "SoulX-FlashHead (2025), Table 3 (HDTF, 75 clips)",
    "rows": {
        "Ditto (published)": {"fid": 12.35, "fvd": 199.13, "lse_c": 3.57, "lse_d": 10.49},
        "Sonic (published)": {"fid": 13.53, "fvd": 113.31, "lse_c": 5.17, "lse_d": 8.69},
    },
}
COLUMNS = ("id", "prediction", "reference", "source", "audio")


@dataclass
class ScoreConfig:
    """Root of ``python -m ditto_research.evaluate.score``."""

    # A .csv with columns prediction, reference (optional id, source, audio); paths relative to it.
    dataset: str = MISSING
    # Where clips.csv / results.json / report.md go (null: Hydra's run folder).
    output_dir: str | None = None
    # Weights (nothing is downloaded; a metric whose weights are absent is n/a with the reason):
    # FID: NVIDIA's InceptionV3 TorchScript inception-2015-12-05.pt (as StyleGAN / clean-fid load it).
    inception_weights: str | None = None
    # FVD: the I3D TorchScript i3d_torchscript.pt (StyleGAN-V's).
    i3d_weights: str | None = None
    # LPIPS: a TorchScript of lpips.LPIPS(net="alex") (see evaluate/quality.py for the one-line export).
    lpips_weights: str | None = None
    # CSIM: an ArcFace ONNX, input (N, 3, 112, 112) (insightface's w600k_r50.onnx or glintr100.onnx).
    arcface_weights: str | None = None
    # LSE-C / LSE-D / AV offset: syncnet_v2.model (joonson/syncnet_python).
    syncnet_weights: str | None = None
    # FID uses every N-th frame of each clip (1 = all).
    fid_stride: int = 1
    # Largest audio-video offset searched by the lip-sync metrics, in frames.
    sync_max_offset: int = 15
    # Score only the first N rows (null: all).
    max_clips: int | None = None
    # Exit 2 when any clip failed (otherwise only when every clip failed).
    strict: bool = False
    # Set by conf/score.yaml's defaults (logger: wandb); None is logger=none.
    logger: LoggerConfig | None = None
    progress: bool = True
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.fid_stride < 1 or self.sync_max_offset < 0:
            raise ConfigError("fid_stride must be >= 1 and sync_max_offset >= 0")
        if self.max_clips is not None and self.max_clips < 1:
            raise ConfigError(f"max_clips={self.max_clips} must be >= 1 (or null)")


@dataclass
class ScoreRow:
    id: str
    prediction: Path
    reference: Path
    source: Path | None = None
    audio: Path | None = None


@dataclass
class ClipScore:
    id: str
    prediction: str
    reference: str
    status: str = "ok"
    error: str | None = None
    frames: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def read_score_list(path: str | Path) -> list[ScoreRow]:
    """The rows of a scoring list (InputError, one line, for a file that is not one)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"dataset={path} does not exist; give a .csv with columns prediction,reference")
    header, records = read_csv(file, f"score list {file}")
    problems = column_problems(header, ("prediction", "reference"), COLUMNS)
    if problems:
        raise InputError(
            f"score list {file}: {problems}; the columns are prediction, reference and optionally id, "
            "source, audio"
        )
    rows, used = [], set()
    for number, record in enumerate(records, start=1):

        def path_of(key: str, record: dict[str, str] = record) -> Path | None:
            return list_path(record.get(key) or "", file)

        pred, ref = path_of("prediction"), path_of("reference")
        if pred is None or ref is None:
            raise InputError(f"score list {file}, row {number}: empty prediction or reference")
        clip_id = (record.get("id") or "").strip() or f"{number:03d}_{pred.stem}"
        while clip_id in used:
            clip_id += "_"
        used.add(clip_id)
        rows.append(ScoreRow(clip_id, pred, ref, path_of("source"), path_of("audio")))
    if not rows:
        raise InputError(f"score list {file} has no rows")
    return rows


def _write(folder: Path, clips: list[ClipScore], summary: dict[str, Any], config: dict[str, Any]) -> None:
    columns = ["id", "status", "error", "frames", *CLIP_METRICS, "notes", "prediction", "reference"]
    rows = []
    for c in clips:
        row = {"id": c.id, "status": c.status, "error": c.error or "", "frames": c.frames}
        row |= {m: "" if c.metrics.get(m) is None else c.metrics[m] for m in CLIP_METRICS}
        row |= {"notes": "; ".join(f"{k}: {v}" for k, v in sorted(c.notes.items()))}
        row |= {"prediction": c.prediction, "reference": c.reference}
        rows.append(row)

    csv_text = _csv_text(columns, rows)
    write_text_atomically(folder / "clips.csv", lambda f: f.write(csv_text))
    results = {
        "summary": summary,
        "published": PUBLISHED,
        "config": config,
        "clips": [c.__dict__ for c in clips],
    }
    text = json.dumps(_json_safe(results), indent=1, default=str, allow_nan=False)
    write_text_atomically(folder / "results.json", lambda f: f.write(text))
    write_text_atomically(folder / "report.md", lambda f: f.write(_report(summary, clips)))


def _json_safe(value: Any) -> Any:
    """JSON without NaN / inf: inf as the string "inf" (PSNR of identical frames), NaN as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _csv_text(columns: list[str], rows: list[dict[str, Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _report(summary: dict[str, Any], clips: list[ClipScore]) -> str:
    means = summary["means"]
    ours = {"fid": summary["fid"], "fvd": summary["fvd"]} | {k: v["mean"] for k, v in means.items()}
    header = "| method | FID ↓ | FVD ↓ | Sync-C ↑ | Sync-D ↓ | PSNR ↑ | SSIM ↑ | LPIPS ↓ | CSIM ↑ | LMD-M ↓ |"
    header += " LMD-F ↓ |"
    lines = [
        "# Quality against ground truth",
        "",
        f"{summary['clips_ok']} of {summary['clips']} clips scored. Definitions: docs/evaluation.md.",
        "",
        header,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("fid", "fvd", "lse_c", "lse_d", "psnr", "ssim", "lpips", "csim", "lmd_mouth", "lmd_face")
    lines.append("| **this set** | " + " | ".join(_fmt(ours.get(k), 2) for k in keys) + " |")
    for name, row in PUBLISHED["rows"].items():
        lines.append(
            f"| {name} | " + " | ".join(_fmt(row.get(k), 2) if k in row else "-" for k in keys) + " |"
        )
    lines += [
        "",
        f"Published rows: {PUBLISHED['source']}; they are another set and another protocol's encoder, not "
        "comparable number for number unless this set is HDTF's 75 clips scored with the same weights.",
        "",
        "## Means with 95 % intervals",
        "",
        "| metric | mean | ± 95 % | std | clips |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in means.items():
        lines.append(
            f"| {name} | {_fmt(m['mean'], 4)} | {_fmt(m['ci95'], 4)} | {_fmt(m['std'], 4)} | {m['n']} |"
        )
    notes = summary.get("notes", {})
    if notes:
        lines += ["", "## Not computed", ""] + [f"- {k}: {v}" for k, v in sorted(notes.items())]
    failed = [c for c in clips if c.status != "ok"]
    if failed:
        lines += ["", "## Failed clips", ""] + [f"- `{c.id}`: {c.error}" for c in failed]
    return "\n".join(lines) + "\n"


def run_scoring(cfg: ScoreConfig, folder: Path) -> tuple[list[ClipScore], dict[str, Any]]:
    """Score every row of ``cfg.dataset`` into ``folder``; returns the clips and the set summary."""
    rows = read_score_list(cfg.dataset)[: cfg.max_clips]
    scorers = QualityScorers.from_files(
        inception=cfg.inception_weights,
        i3d=cfg.i3d_weights,
        lpips=cfg.lpips_weights,
        arcface=cfg.arcface_weights,
        syncnet=cfg.syncnet_weights,
        fid_stride=cfg.fid_stride,
        sync_max_offset=cfg.sync_max_offset,
    )
    folder.mkdir(parents=True, exist_ok=True)
    stats = SetStats()
    clips: list[ClipScore] = []
    for number, row in enumerate(rows, start=1):
        clip = ClipScore(row.id, str(row.prediction), str(row.reference))
        start = time.perf_counter()
        try:
            for name, path in (("prediction", row.prediction), ("reference", row.reference)):
                if not path.is_file():
                    raise InputError(f"{name} {path} does not exist")
            result = score_pair(
                row.prediction, row.reference, scorers, source=row.source, audio=row.audio, set_stats=stats
            )
            clip.metrics, clip.notes, clip.frames = result.metrics, result.notes, result.frames
        except DittoError as e:
            clip.status, clip.error = "failed", str(e)
            log.warning("clip %s not scored: %s", row.id, e)
        clip.seconds = time.perf_counter() - start
        clips.append(clip)
        if cfg.progress:
            print(f"[{number}/{len(rows)}] {row.id}: {clip.status} ({clip.seconds:.1f} s)", file=sys.stderr)
    ok = [c for c in clips if c.status == "ok"]
    fid, fid_note = stats.fid() if scorers.inception is not None else (None, scorers.unavailable()["fid"])
    fvd, fvd_note = stats.fvd() if scorers.i3d is not None else (None, scorers.unavailable()["fvd"])
    summary: dict[str, Any] = {
        "clips": len(clips),
        "clips_ok": len(ok),
        "fid": fid,
        "fvd": fvd,
        "means": {m: mean_with_interval([c.metrics.get(m) for c in ok]) for m in CLIP_METRICS},
        "notes": {k: v for k, v in {"fid": fid_note, "fvd": fvd_note, **scorers.unavailable()}.items() if v},
    }
    identical = sum(1 for c in ok if c.metrics.get("psnr") == math.inf)
    if identical:
        summary["notes"]["psnr"] = (
            f"{identical} clip(s) identical to their reference (PSNR inf): left out of the mean"
        )
    return clips, summary


def register_score_configs() -> None:
    from ditto_research.config import register_configs

    register_configs()
    cs = ConfigStore.instance()
    cs.store(name="base_score", node=ScoreConfig)
    cs.store(name="schema_logger", node=LoggerConfig)


register_score_configs()
APP = HydraApp("score", stopped="clips scored so far are not written; run it again")


def _log_wandb(cfg: ScoreConfig, folder: Path, clips: list[ClipScore], summary: dict[str, Any]) -> None:
    if cfg.logger is None or cfg.logger.name != "wandb":
        return
    import wandb

    run = wandb.init(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        group=cfg.logger.group,
        tags=list(cfg.logger.tags),
        dir=str(cfg.logger.dir or folder),
        mode=cfg.logger.wandb_mode,  # type: ignore[arg-type]
        job_type="score",
    )
    table = wandb.Table(columns=["id", "status", *CLIP_METRICS])
    for c in clips:
        table.add_data(c.id, c.status, *[c.metrics.get(m) for m in CLIP_METRICS])
    run.log({"clips": table})
    run.summary.update({"fid": summary["fid"], "fvd": summary["fvd"]})
    run.summary.update({f"{k}_mean": v["mean"] for k, v in summary["means"].items()})
    run.finish()


@APP.main
def main(cfg: DictConfig) -> None:
    from omegaconf import OmegaConf

    from ditto_research.config import to_config
    from ditto_research.logs import configure_logging

    typed = to_config(cfg, ScoreConfig)
    configure_logging(typed.verbose)
    if typed.output_dir:
        folder = Path(typed.output_dir).expanduser()
    else:
        from hydra.core.hydra_config import HydraConfig

        folder = Path(HydraConfig.get().runtime.output_dir)
    clips, summary = run_scoring(typed, folder)
    _write(folder, clips, summary, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    _log_wandb(typed, folder, clips, summary)
    failed = summary["clips"] - summary["clips_ok"]
    means = summary["means"]
    print(
        f"{folder}: {summary['clips_ok']}/{summary['clips']} clips scored; "
        f"PSNR {_fmt(means['psnr']['mean'], 2)}, SSIM {_fmt(means['ssim']['mean'])}, "
        f"LMD-M {_fmt(means['lmd_mouth']['mean'], 2)}, FID {_fmt(summary['fid'], 2)}, "
        f"FVD {_fmt(summary['fvd'], 2)} (report: {folder / 'report.md'})"
    )
    if failed:
        print(
            f"{'error' if typed.strict or not summary['clips_ok'] else 'warning'}: {failed} of "
            f"{summary['clips']} clips could not be scored (reasons in {folder / 'clips.csv'})",
            file=sys.stderr,
        )
        if typed.strict or not summary["clips_ok"]:
            sys.exit(2)


if __name__ == "__main__":
    APP.run(main)
