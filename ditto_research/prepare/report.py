"""The report of a prepared dataset: ``report.md`` and ``contact_sheet.png`` in its folder, and the summary
printed at the end of a job — all from the manifest (so it covers every shard merged so far).

    python -m ditto_research.prepare.report DATASET_DIR      # write it again, e.g. after more shards finished
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2

from ditto_research.atomic import write_text_atomically
from ditto_research.constants import FPS
from ditto_research.data.clip import CLIP_ARRAYS
from ditto_research.data.dataset import read_manifest
from ditto_research.prepare.contact_sheet import save_contact_sheet

__all__ = ["dataset_totals", "summary_lines", "write_report"]

STAGES = ("decode", "audio", "cuts", "face", "motion", "audio_features", "emotion")
_STAGE_NAMES = {
    "decode": "decode (25 fps frames)",
    "audio": "audio decode (16 kHz)",
    "cuts": "shot-cut test",
    "face": "face front-end (track, crop, 478 landmarks)",
    "motion": "motion extractor",
    "audio_features": "speech features",
    "emotion": "emotion",
}


def _hours(frames: float) -> float:
    return frames / FPS / 3600


def dataset_totals(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Counts the report and the summary print: sources kept / skipped (by reason), clips, frames, skipped
    stretches by reason, seconds per stage."""
    sources = manifest["sources"]
    clips = manifest["clips"]
    kept = [s for s in sources if s.get("status") == "done"]
    skipped = [s for s in sources if s.get("status") != "done"]
    reasons = Counter(_reason_kind(s.get("reason", "")) for s in skipped)
    stretches: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for source in sources:
        for item in source.get("skipped", []):
            stretches[item["reason"]][0] += 1
            stretches[item["reason"]][1] += int(item["frames"])
    seconds: Counter[str] = Counter()
    frames = 0
    for source in sources:
        stats = source.get("stats", {})
        seconds.update(stats.get("seconds", {}))
        seconds["total"] += stats.get("total_s", 0.0)
        frames += int(source.get("frames", 0))
    originals = [c for c in clips if not c.get("flipped")]
    return {
        "sources": len(sources),
        "kept_sources": len(kept),
        "skipped_sources": len(skipped),
        "skip_reasons": dict(reasons),
        "clips": len(clips),
        "mirrored": len(clips) - len(originals),
        "frames_kept": sum(int(c["frames"]) for c in originals),
        "frames_all": sum(int(c["frames"]) for c in clips),
        "frames_decoded": frames,
        "stretches": {k: tuple(v) for k, v in stretches.items()},
        "seconds": dict(seconds),
        "peak_rss_mb": max((s.get("stats", {}).get("peak_rss_mb") or 0 for s in sources), default=0),
    }


def _reason_kind(reason: str) -> str:
    """The category of a whole-source skip (its message names the file; the report counts kinds)."""
    text = reason.lower()
    for key, kind in (
        ("no audio", "no audio track"),
        ("no video stream", "not a video (no video stream)"),
        ("neither an image nor a video", "not decodable"),
        ("cannot decode", "not decodable"),
        ("does not exist", "missing file"),
        ("a training clip needs at least", "too short"),
        ("no segment of at least", "no usable segment (short shots / no face)"),
        ("is not a label", "bad emotion label"),
        ("emotion", "emotion model left it out"),
    ):
        if key in text:
            return kind
    return "other"


def _feature_stats(clips: list[Mapping[str, Any]]) -> dict[str, tuple[float, float, float, float]]:
    out = {}
    for name in CLIP_ARRAYS:
        parts = [c["stats"][name] for c in clips if "stats" in c and name in c["stats"]]
        if not parts:
            continue
        count = sum(p["count"] for p in parts)
        mean = sum(p["sum"] for p in parts) / count
        var = max(sum(p["sumsq"] for p in parts) / count - mean * mean, 0.0)
        out[name] = (mean, var**0.5, min(p["min"] for p in parts), max(p["max"] for p in parts))
    return out


def summary_lines(manifest: Mapping[str, Any]) -> list[str]:
    """A few lines saying what the dataset holds (printed at the end of a job)."""
    t = dataset_totals(manifest)
    lines = [
        f"kept {t['kept_sources']} of {t['sources']} videos: {t['clips']} clips "
        f"({t['mirrored']} mirrored), {_hours(t['frames_kept']):.3f} h of footage "
        f"({t['frames_kept']} frames; {_hours(t['frames_all']):.3f} h with mirrored copies)"
    ]
    if t["skip_reasons"]:
        lines.append(
            "skipped videos: " + ", ".join(f"{n} {kind}" for kind, n in sorted(t["skip_reasons"].items()))
        )
    if t["stretches"]:
        lines.append(
            "skipped stretches: "
            + ", ".join(
                f"{n} {reason} ({f / FPS:.1f} s)" for reason, (n, f) in sorted(t["stretches"].items())
            )
        )
    return lines


def write_report(folder: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``contact_sheet.png`` into the dataset ``folder``; returns their paths."""
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    t = dataset_totals(manifest)
    identity = manifest.get("identity") or {}
    prep = identity.get("prepare", {})
    lines = [
        f"# Prepared dataset `{folder.name}`",
        "",
        f"Model `{identity.get('model', {}).get('name')}`, "
        f"face front-end `{identity.get('face', {}).get('name')}`, "
        f"speech features `{identity.get('audio_encoder')}`, flip `{prep.get('flip')}`, emotion "
        f"`{prep.get('emotion')}`, settings hash `{manifest.get('config', {}).get('identity_hash')}`; "
        f"shards merged: {', '.join(f'{i}/{n}' for i, n in manifest.get('shards', [])) or 'none'}.",
        "",
        "## What it holds",
        "",
        *[f"- {line}" for line in summary_lines(manifest)],
        "",
        "| | videos | clips | frames | hours |",
        "|---|---:|---:|---:|---:|",
        f"| kept | {t['kept_sources']} | {t['clips'] - t['mirrored']} | {t['frames_kept']} | "
        f"{_hours(t['frames_kept']):.3f} |",
        f"| with mirrored copies | | {t['clips']} | {t['frames_all']} | {_hours(t['frames_all']):.3f} |",
        f"| decoded | {t['sources']} | | {t['frames_decoded']} | {_hours(t['frames_decoded']):.3f} |",
        "",
    ]
    skipped = [s for s in manifest["sources"] if s.get("status") != "done"]
    if skipped:
        lines += ["## Skipped videos", "", "| video | reason |", "|---|---|"]
        for source in skipped[:100]:
            reason = str(source.get("reason", "")).replace("|", "/")
            lines.append(f"| `{Path(source['video']).name}` | {reason} |")
        if len(skipped) > 100:
            lines.append(f"| ... | {len(skipped) - 100} more in manifest.json |")
        lines.append("")
    if t["stretches"]:
        lines += [
            "## Skipped stretches (inside videos)",
            "",
            "| reason | stretches | seconds |",
            "|---|---:|---:|",
        ]
        for reason, (n, frames) in sorted(t["stretches"].items()):
            lines.append(f"| {reason} | {n} | {frames / FPS:.1f} |")
        lines.append("")
    stats = _feature_stats(manifest["clips"])
    if stats:
        lines += [
            "## Features (all clips, all values)",
            "",
            "| array | mean | std | min | max |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, (mean, std, low, high) in stats.items():
            lines.append(f"| `{name}` | {mean:.4g} | {std:.4g} | {low:.4g} | {high:.4g} |")
        lines.append("")
    if t["frames_decoded"]:
        lines += [
            "## Speed (this job's machine; frames of video per second of each stage)",
            "",
            "| stage | seconds | frames / s |",
            "|---|---:|---:|",
        ]
        for stage in STAGES:
            seconds = t["seconds"].get(stage, 0.0)
            if seconds > 0:
                lines.append(
                    f"| {_STAGE_NAMES[stage]} | {seconds:.1f} | {t['frames_decoded'] / seconds:.1f} |"
                )
        total = t["seconds"].get("total", 0.0)
        if total > 0:
            lines.append(f"| **end to end** | {total:.1f} | {t['frames_decoded'] / total:.1f} |")
        lines += ["", f"Peak memory of a preparing process: {t['peak_rss_mb']:.0f} MB.", ""]
    sheet = folder / "contact_sheet.png"
    tiles = []
    for clip in manifest["clips"]:
        thumb = folder / "thumbs" / f"{clip['id']}.jpg"
        if clip.get("flipped") or not thumb.is_file():
            continue
        image = cv2.imread(str(thumb))
        if image is not None:
            tiles.append((clip["id"], cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
    save_contact_sheet(sheet, tiles)
    lines += [
        "## Contact sheet (first face crop of each clip)",
        "",
        "![contact sheet](contact_sheet.png)",
        "",
    ]
    text = "\n".join(lines)
    report = write_text_atomically(folder / "report.md", lambda f: f.write(text))
    return report, sheet


def main(argv: list[str] | None = None) -> int:
    from ditto_research.apps import exit_on_errors

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m ditto_research.prepare.report DATASET_DIR", file=sys.stderr)
        return 2
    with exit_on_errors():
        report, sheet = write_report(args[0])
        print("\n".join(summary_lines(read_manifest(Path(args[0])))))
        print(f"report: {report}\ncontact sheet: {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
