"""``python -m ditto_research.evaluate.report RUN_OR_SWEEP_DIR`` — report.md and report.html with tables \
and plots.

Reads every ``results.json`` under the folder (one run, or the runs of a sweep) and writes, into that folder:

- ``report.md`` / ``report.html``: the setup (what was fixed, what varied, the machine), one row per run
  (throughput, real-time factor, per-stage ms per frame, lip-sync and motion numbers), the failures (runs,
  clips, metrics that could not be computed, and why);
- ``report_latency_stages.png`` (ms per frame of each stage, per run), ``report_fps_vs_steps.png`` (one line
  per sampler and other varied setting), ``report_sync_vs_steps.png`` (LSE-D, LSE-C, proxy correlation vs
  steps, where computed), ``report_online_latency_cdf.png`` (per-frame latency of online runs, if any).

The tables and plots are built by small functions (:func:`runs_table`, :func:`plot_*`) that the notebooks use.
"""

from __future__ import annotations

import argparse
import html
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ditto_research.errors import DittoError
from ditto_research.evaluate.results import RunRecord, find_runs

__all__ = [
    "Table",
    "plot_fps_vs_steps",
    "plot_online_latency_cdf",
    "plot_stage_latency",
    "plot_sync_vs_steps",
    "run_label",
    "runs_table",
    "varying_params",
    "write_report",
]

RANDOM_WEIGHT_MODELS = ("tiny", "untrained")
DERIVED_PARAMS = {"eta": "sampler"}  # parameter -> the one that sets it when left at its default
SYNC_METRICS = (
    ("lse_d", "LSE-D (lower is better)"),
    ("lse_c", "LSE-C (higher is better)"),
    ("proxy_corr", "sync proxy: peak correlation"),
)


@dataclass
class Table:
    """A plain table: column names and rows of already formatted cells (shown as HTML in notebooks)."""

    columns: list[str]
    rows: list[list[str]]

    def to_markdown(self) -> str:
        return _markdown_table(self)

    def _repr_html_(self) -> str:
        return _html_table(self)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"


def varying_params(runs: Sequence[RunRecord]) -> list[str]:
    """Parameters whose value differs between runs, in a stable order (``eta`` left out where the sampler
    alone decides it: only ddim has one)."""
    names: list[str] = []
    for run in runs:
        names += [k for k in run.params if k not in names]
    varying = [k for k in names if len({repr(r.params.get(k)) for r in runs}) > 1]
    for derived, decider in DERIVED_PARAMS.items():
        if derived in varying and decider in varying and _is_function_of(runs, derived, decider):
            varying.remove(derived)
    return varying


def _is_function_of(runs: Sequence[RunRecord], key: str, decider: str) -> bool:
    seen: dict[str, str] = {}
    for run in runs:
        value, by = repr(run.params.get(key)), repr(run.params.get(decider))
        if seen.setdefault(by, value) != value:
            return False
    return True


def run_label(run: RunRecord, keys: Sequence[str]) -> str:
    """Short name of a run from its varied parameters (``sampler=ddim steps=10``), or its folder name."""
    parts = [f"{k}={run.params.get(k)}" for k in keys]
    return " ".join(parts) if parts else Path(run.run_dir).name


def _stage_names(runs: Sequence[RunRecord]) -> list[str]:
    names: list[str] = []
    for run in runs:
        names += [s.stage for s in run.stages if s.stage not in names]
    return names


def runs_table(runs: Sequence[RunRecord]) -> Table:
    """One row per run: varied parameters, status, throughput, per-stage ms/frame, lip-sync, motion."""
    keys, stages = varying_params(runs), _stage_names(runs)
    columns = [
        *keys,
        "status",
        "clips ok",
        "fps",
        "RTF",
        "load s",
        "first frame ms",
        "latency p95 ms",
        *[f"{s} ms/frame" for s in stages],
        "LSE-D",
        "LSE-C",
        "proxy corr",
        "lip energy",
        "peak RSS MB",
    ]
    rows = []
    for run in runs:
        s = run.summary
        per_stage = {st.stage: st.ms_per_frame for st in run.stages}
        rows.append(
            [
                *(str(run.params.get(k)) for k in keys),
                run.status,
                f"{s.get('clips_ok', 0)}/{s.get('clips', len(run.clips))}",
                _fmt(s.get("fps")),
                _fmt(s.get("rtf")),
                _fmt(s.get("load_s")),
                _fmt(s.get("first_frame_ms")),
                _fmt(s.get("latency_p95_ms")),
                *(_fmt(per_stage.get(st)) for st in stages),
                _fmt(s.get("lse_d")),
                _fmt(s.get("lse_c")),
                _fmt(s.get("proxy_corr")),
                _fmt(s.get("lip_energy")),
                _fmt(s.get("peak_rss_mb"), 4),
            ]
        )
    return Table(columns, rows)


def failures_tables(runs: Sequence[RunRecord]) -> tuple[Table, Table, Table]:
    """(failed runs, failed clips, metrics left out with their reason and how often)."""
    keys = varying_params(runs)
    failed_runs = Table(
        ["run", "folder", "error"],
        [[run_label(r, keys), Path(r.run_dir).name, r.error or "?"] for r in runs if r.status != "ok"],
    )
    failed_clips = Table(
        ["run", "clip", "error"],
        [[run_label(r, keys), c.clip_id, c.error or "?"] for r in runs for c in r.failed_clips],
    )
    notes: Counter[tuple[str, str]] = Counter()
    for run in runs:
        for metric, note in run.notes.items():
            notes[(metric, note)] += 1
        for clip in run.clips:
            for metric, note in clip.notes.items():
                notes[(metric, note)] += 1
    metric_notes = Table(
        ["metric", "reason", "times"], [[m, n, str(k)] for (m, n), k in sorted(notes.items())]
    )
    logger = [[run_label(r, keys), "logger", r.logger_error] for r in runs if r.logger_error]
    failed_runs.rows += logger
    return failed_runs, failed_clips, metric_notes


# ---- plots ------------------------------------------------------------------------------------------------


def _pyplot():
    """pyplot with whatever backend is active (inline in notebooks); the command lines select Agg."""
    import matplotlib.pyplot as plt

    return plt


def use_file_backend() -> None:
    """Draw into files only (no window): for the command lines, before the first plot."""
    import matplotlib

    matplotlib.use("Agg")


def _series(runs: Sequence[RunRecord], keys: Sequence[str]) -> dict[str, list[RunRecord]]:
    """Runs that succeeded, grouped by the varied parameters ``keys`` except steps (one line per group), each
    group sorted by steps."""
    keys = [k for k in keys if k != "steps"]
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.status == "ok":
            groups.setdefault(run_label(run, keys) if keys else "all runs", []).append(run)
    return {name: sorted(group, key=lambda r: r.params.get("steps") or 0) for name, group in groups.items()}


def _steps_axis(ax, runs: Sequence[RunRecord]) -> None:
    """Log-scaled steps axis with a tick at every step count that ran."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    steps = sorted({int(r.params["steps"]) for r in runs if isinstance(r.params.get("steps"), int)})
    ax.set_xscale("log")
    ax.set_xticks(steps)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("sampler steps")


def plot_stage_latency(runs: Sequence[RunRecord], path: Path | None = None):
    """Horizontal stacked bars: ms per frame of each stage, one bar per run."""
    plt = _pyplot()
    ok = [r for r in runs if r.status == "ok" and r.stages]
    keys, stages = varying_params(runs), _stage_names(ok)
    fig, ax = plt.subplots(figsize=(9, 0.45 * max(len(ok), 2) + 1.5))
    left = np.zeros(len(ok))
    for stage in stages:
        values = np.array([next((s.ms_per_frame for s in r.stages if s.stage == stage), 0.0) for r in ok])
        ax.barh(range(len(ok)), values, left=left, label=stage)
        left += values
    ax.set_yticks(range(len(ok)), [run_label(r, keys) for r in ok], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("busy time per output frame (ms); the stages run in parallel threads")
    ax.set_title("Latency per stage")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _finish(fig, path)


def plot_fps_vs_steps(runs: Sequence[RunRecord], path: Path | None = None):
    """End-to-end fps against sampler steps, one line per sampler / varied setting."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, group in _series(runs, varying_params(runs)).items():
        steps = [r.params.get("steps") for r in group]
        ax.plot(steps, [r.summary.get("fps") or np.nan for r in group], marker="o", label=name)
    _steps_axis(ax, runs)
    ax.set_ylabel("end-to-end frames per second")
    ax.set_title("Throughput vs steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def _has_values(runs: Sequence[RunRecord], key: str) -> bool:
    return any(r.summary.get(key) is not None for r in runs)


def plot_sync_vs_steps(runs: Sequence[RunRecord], path: Path | None = None):
    """LSE-D, LSE-C and the proxy's peak correlation against steps (only the metrics that have values)."""
    plt = _pyplot()
    ok = [r for r in runs if r.status == "ok"]
    metrics = [(k, t) for k, t in SYNC_METRICS if _has_values(ok, k)]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], metrics):
        for name, group in _series(runs, varying_params(runs)).items():
            values = [r.summary.get(key) for r in group]
            ax.plot(
                [r.params.get("steps") for r in group],
                [np.nan if v is None else v for v in values],
                marker="o",
                label=name,
            )
        _steps_axis(ax, runs)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _finish(fig, path)


def plot_online_latency_cdf(runs: Sequence[RunRecord], path: Path | None = None):
    """Empirical CDF of per-frame latency (ms) of every run that streamed (mode=online)."""
    plt = _pyplot()
    streamed = [
        (r, np.concatenate([np.asarray(c.frame_latency_ms, float) for c in r.clips if c.frame_latency_ms]))
        for r in runs
        if any(c.frame_latency_ms for c in r.clips)
    ]
    if not streamed:
        return None
    keys = varying_params(runs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run, values in streamed:
        values = np.sort(values)
        ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=run_label(run, keys))
    ax.set_xlabel("frame latency (ms): frame out - its audio in")
    ax.set_ylabel("fraction of frames")
    ax.set_title("Online latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def _finish(fig, path: Path | None):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        _pyplot().close(fig)
    return fig


# ---- documents ---------------------------------------------------------------------------------------------


def _markdown_table(table: Table) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


Block = tuple[str, Any]  # ("h2", text) | ("p", text) | ("table", Table) | ("img", (file, alt))


def _blocks(runs: Sequence[RunRecord], folder: Path, images: dict[str, str]) -> list[Block]:
    keys = varying_params(runs)
    first = runs[0]
    fixed = {k: v for k, v in first.params.items() if len({repr(r.params.get(k)) for r in runs}) == 1}
    blocks: list[Block] = [("h1", f"Evaluation report: {folder.name}")]
    ok = sum(r.status == "ok" for r in runs)
    varied = ", ".join(keys) or "nothing (a single configuration)"
    blocks.append(("p", f"{len(runs)} run(s), {ok} ok, {len(runs) - ok} failed. Varied: {varied}."))
    blocks.append(("p", "Fixed: " + ", ".join(f"{k}={v}" for k, v in fixed.items() if v is not None) + "."))
    system = first.system
    machine = (
        f"Machine: {system.get('platform', '?')}, {system.get('cpus', '?')} CPUs, torch "
        f"{system.get('torch', '?')} ({system.get('torch_threads', '?')} threads), "
        f"{system.get('cuda_device', 'no GPU')}; load average at start "
        f"{_fmt((system.get('load_average') or [None])[0])}."
    )
    blocks.append(("p", machine))
    models = {r.params.get("model") for r in runs}
    if models & set(RANDOM_WEIGHT_MODELS):
        names = "/".join(sorted(m for m in models if m))
        warning = (
            f"**Random weights** (model={names}): the networks are not trained, so the output is not a "
            "talking face and every lip-sync and motion number here is meaningless; only the latency "
            "numbers and the machinery are. Use model=ditto for real scores."
        )
        blocks.append(("p", warning))
    legend = (
        "fps: frames / wall time from loading the audio to the finished MP4 (registration and muxing "
        "included); RTF: that time / audio length (< 1 is faster than real time); stage ms/frame: each "
        "stage thread's busy time per output frame (the stages overlap, so the slowest one bounds "
        "throughput); latency p95: per-frame latency of online runs."
    )
    blocks += [("h2", "Runs"), ("table", runs_table(runs)), ("p", legend)]
    for key, title in (
        ("latency", "Latency per stage"),
        ("fps", "Throughput vs steps"),
        ("sync", "Lip-sync vs steps"),
        ("cdf", "Online latency"),
    ):
        if key in images:
            blocks += [("h2", title), ("img", (images[key], title))]
    if "sync" not in images:
        computed = any(r.summary.get(k) is not None for r in runs for k, _ in SYNC_METRICS)
        blocks += [
            ("h2", "Lip-sync"),
            (
                "p",
                "See the LSE-D, LSE-C and proxy columns of the runs table."
                if computed
                else "No lip-sync values were computed (reasons below).",
            ),
        ]
    failed_runs, failed_clips, notes = failures_tables(runs)
    blocks.append(("h2", "Failures"))
    if not (failed_runs.rows or failed_clips.rows or notes.rows):
        blocks.append(("p", "None: every run and clip succeeded and every selected metric was computed."))
    for title, table in (
        ("Runs that failed", failed_runs),
        ("Clips that failed", failed_clips),
        ("Metrics left out", notes),
    ):
        if table.rows:
            blocks += [("h3", title), ("table", table)]
    return blocks


def _render_markdown(blocks: list[Block]) -> str:
    out = []
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + value)
        elif kind == "p":
            out.append(value)
        elif kind == "table":
            out.append(_markdown_table(value))
        elif kind == "img":
            out.append(f"![{value[1]}]({value[0]})")
    return "\n\n".join(out) + "\n"


def _render_html(blocks: list[Block], title: str) -> str:
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;"
        "padding:3px 7px;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:"
        "left}img{max-width:100%}"
    )
    head = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
    out = [f"{head}<style>{style}</style></head><body>"]
    for kind, value in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{html.escape(value)}</{kind}>")
        elif kind == "p":
            text = html.escape(value)
            while text.count("**") >= 2:
                text = text.replace("**", "<b>", 1).replace("**", "</b>", 1)
            out.append(f"<p>{text}</p>")
        elif kind == "table":
            out.append(_html_table(value))
        elif kind == "img":
            out.append(f"<img src='{html.escape(value[0])}' alt='{html.escape(value[1])}'>")
    return "\n".join(out) + "</body></html>\n"


def write_report(folder: str | Path, runs: Sequence[RunRecord] | None = None) -> tuple[Path, Path]:
    """Write report.md, report.html and the plots into ``folder`` (a run or a sweep); returns (md, html)."""
    folder = Path(folder)
    runs = list(runs) if runs is not None else find_runs(folder)
    images: dict[str, str] = {}
    plots = {
        "latency": plot_stage_latency,
        "fps": plot_fps_vs_steps,
        "sync": plot_sync_vs_steps,
        "cdf": plot_online_latency_cdf,
    }
    files = {
        "latency": "report_latency_stages.png",
        "fps": "report_fps_vs_steps.png",
        "sync": "report_sync_vs_steps.png",
        "cdf": "report_online_latency_cdf.png",
    }
    has_steps = len({r.params.get("steps") for r in runs if r.status == "ok"}) > 1
    for key, plot in plots.items():
        if key in ("fps", "sync") and not has_steps:
            continue
        if key == "latency" and not any(r.status == "ok" and r.stages for r in runs):
            continue
        if plot(runs, folder / files[key]) is not None:
            images[key] = files[key]
    blocks = _blocks(runs, folder, images)
    md, page = folder / "report.md", folder / "report.html"
    md.write_text(_render_markdown(blocks), encoding="utf-8")
    page.write_text(_render_html(blocks, f"Evaluation report: {folder.name}"), encoding="utf-8")
    return md, page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ditto_research.evaluate.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "folder", type=Path, help="a run folder or a sweep folder of python -m ditto_research.evaluate.run"
    )
    args = parser.parse_args(argv)
    use_file_backend()
    try:
        md, page = write_report(args.folder)
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {md} and {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
