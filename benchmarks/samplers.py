"""Sampler benchmark: per 80-frame LMDM window, wall time, network evaluations and error vs a \
converged solution.

    # full run (about 10-20 min on a 2-core CPU), writes docs/
    python benchmarks/samplers.py
    # smoke run: steps 5 10, one timing run, 50-step reference
    python benchmarks/samplers.py --quick

Full-size LMDM with seeded random weights (``load_network("lmdm")``), torch threads = 2, float32 CPU. For one
window (random condition, kp_cond and x_T from ``--seed``) it measures

1. the converged solution: the same x_T and conditions solved by deterministic DDIM with 250 steps;
2. the reference settings (DDIM 50 steps, eta 1, guidance 2) run two ways with the same noises: the original
   implementation's structure (per step two separate guided forward passes, each re-encoding the condition:
   :func:`ditto_research.diffusion.reference.original_structure_ddim`) and ours (condition encoded and
   cross-attention keys/values projected once per window, both branches as one batch); their outputs must
   agree to 1e-5 (max rel diff);
3. every sampler at every step count: median wall time of ``--runs`` timed runs, network evaluations (one
   guided pass, both branches batched, each) and the error against (1).

Timed runs are interleaved (every configuration once per round) so that the load of a shared machine spreads
evenly; the load average is printed and written with the results. OpenMP waits passively unless
OMP_WAIT_POLICY says otherwise (see below). Results go to docs/samplers.md (a generated page) and
docs/samplers.png (error vs time).

Formerly ``python -m ditto_research.evaluate.samplers``, which still runs this file (deprecated).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# OpenMP threads spin while they wait; on a shared machine that makes 2-thread timings swing by 5x and more.
# Passive waiting (set before torch starts the OpenMP runtime; both implementations run under it alike)
# keeps them stable. An explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from ditto_research.diffusion.ddim import draw_step_noises
from ditto_research.diffusion.reference import (
    REFERENCE_GUIDANCE,
    Window,
    original_structure_ddim,
    relative_errors,
)
from ditto_research.diffusion.samplers import SAMPLERS, SamplingPlan, make_plan, solve_window
from ditto_research.errors import DittoError
from ditto_research.models import load_network
from ditto_research.models.lmdm import LMDM

GUIDANCE = REFERENCE_GUIDANCE
REFERENCE_STEPS = 50
FAST_MIN_SPEEDUP = 8.0  # the fast choice must beat the reference 50-step run by this factor
FAST_SAMPLER = ("dpmpp_2m", 10)  # the documented fast choice (conf/sampler/dpmpp_2m.yaml + sampler.steps=10)


@dataclass
class Row:
    """One benchmark configuration and its measurements."""

    label: str
    sampler: str
    steps: int
    evaluations: int
    run: Callable[[], torch.Tensor]
    times: list[float]
    cpu_times: list[float] = field(default_factory=list)
    output: torch.Tensor | None = None
    error_max: float = float("nan")
    error_rms: float = float("nan")

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpu_times)


def make_window(lmdm: LMDM, seed: int, steps: int) -> Window:
    gen = torch.Generator().manual_seed(seed)
    shape = (1, lmdm.seq_frames, lmdm.motion_dim)
    step_noises = draw_step_noises(steps, shape, gen)
    x_T = torch.randn(shape, generator=gen)
    kp_cond = torch.randn(1, lmdm.motion_dim, generator=gen)
    cond = torch.randn(1, lmdm.seq_frames, lmdm.cond_dim, generator=gen)
    return Window(kp_cond, cond, x_T, step_noises)


def build_rows(lmdm: LMDM, window: Window, samplers: list[str], steps_list: list[int]) -> list[Row]:
    """The reference pair (original structure, ours) first, then every sampler x steps."""

    def ours(plan: SamplingPlan) -> Callable[[], torch.Tensor]:
        return lambda: solve_window(lmdm, plan, window.kp_cond, window.cond, window.x_T, GUIDANCE)

    ddim_ref = make_plan(lmdm, "ddim", REFERENCE_STEPS, step_noises=window.step_noises)
    rows = [
        Row("original structure", "ddim", REFERENCE_STEPS, 2 * REFERENCE_STEPS,
            lambda: original_structure_ddim(lmdm, window, REFERENCE_STEPS), []),
        Row("ours", "ddim", REFERENCE_STEPS, ddim_ref.evaluations, ours(ddim_ref), []),
    ]  # fmt: skip
    for name in samplers:
        for steps in steps_list:
            if name == "ddim" and steps == REFERENCE_STEPS:
                continue  # that is the "ours" row
            if name == "ddim":
                plan = make_plan(lmdm, name, steps, eta=1.0, step_noises=window.step_noises[: steps - 1])
            else:
                plan = make_plan(lmdm, name, steps)
            rows.append(Row(name, name, steps, plan.evaluations, ours(plan), []))
    return rows


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min) on {os.cpu_count()} CPUs"


def measure(rows: list[Row], converged: torch.Tensor, runs: int) -> None:
    """``runs`` interleaved rounds of wall and process CPU time; the first run's output gives the errors.

    The converged run before this warmed the thread pool up, and every plan is built (diffusers imported).
    """
    for round_index in range(runs):
        for row in rows:
            wall, cpu = time.perf_counter(), time.process_time()
            out = row.run()
            row.times.append(time.perf_counter() - wall)
            row.cpu_times.append(time.process_time() - cpu)
            if row.output is None:  # every sampler here is deterministic given its injected noises
                row.output = out
                row.error_max, row.error_rms = relative_errors(out, converged)
        print(f"  round {round_index + 1}/{runs} done, load average {load_average()}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/samplers.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: steps 5 10, 1 run, 50-step converged"
    )
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--steps", nargs="+", type=int, default=[5, 10, 25, 50])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per configuration (median reported)")
    parser.add_argument("--converged-steps", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-md", type=Path, default=Path("docs") / "samplers.md")
    parser.add_argument("--out-png", type=Path, default=Path("docs") / "samplers.png")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.runs, args.converged_steps = [5, 10], 1, 50
    if args.runs < 1 or min(args.steps) < 1 or max(args.steps) > 1000:
        parser.error("--runs must be >= 1 and every --steps value in [1, 1000]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    load_before = load_average()
    print(f"load average before: {load_before}", flush=True)
    lmdm = load_network("lmdm", seed=args.seed)
    window = make_window(lmdm, args.seed, REFERENCE_STEPS)
    converged_plan = make_plan(
        lmdm, "ddim", args.converged_steps, eta=0.0,
        step_noises=torch.zeros(args.converged_steps - 1, *window.x_T.shape),
    )  # fmt: skip
    converged = solve_window(lmdm, converged_plan, window.kp_cond, window.cond, window.x_T, GUIDANCE)
    rows = build_rows(lmdm, window, args.samplers, args.steps)
    measure(rows, converged, args.runs)
    original, ours = rows[0].output, rows[1].output
    assert original is not None and ours is not None
    structure_diff = relative_errors(ours, original)[0]
    print(
        f"original structure vs ours, DDIM {REFERENCE_STEPS}: max rel diff {structure_diff:.2e}", flush=True
    )
    load_after = load_average()
    print(f"load average after: {load_after}", flush=True)

    context = {
        "argv": " ".join(sys.argv[1:]) or "(defaults)",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, float32, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
        "load_before": load_before,
        "load_after": load_after,
        "model": f"window {lmdm.seq_frames} x {lmdm.motion_dim}, condition width {lmdm.cond_dim}",
        "converged_steps": args.converged_steps,
        "runs": args.runs,
    }
    report = render_report(rows, structure_diff, context, args.out_png.name)
    args.out_md.parent.mkdir(parents=True, exist_ok=True)
    args.out_md.write_text(report)
    print(report)
    write_plot(args.out_png, rows)
    print(f"wrote {args.out_md} and {args.out_png}")
    if structure_diff > 1e-5:
        print(
            f"FAIL: ours differs from the original structure by {structure_diff:.2e} > 1e-5", file=sys.stderr
        )
        return 1
    return 0


# ---- report ------------------------------------------------------------------------------------------------


def render_report(rows: list[Row], structure_diff: float, context: dict[str, object], png_name: str) -> str:
    """docs/samplers.md: the reference comparison, the fast choice and the full table."""
    original, ours = rows[0], rows[1]
    by_key = {(row.sampler, row.steps): row for row in rows[1:]}
    fast = by_key.get(FAST_SAMPLER)
    ddim50 = by_key.get(("ddim", REFERENCE_STEPS), ours)
    lines = [
        "# LMDM samplers: time, network evaluations and error per 80-frame window",
        "",
        (
            f"Generated by `python benchmarks/samplers.py {context['argv']}` on "
            f"{time.strftime('%Y-%m-%d %H:%M')}."
        ),
        f"Machine: {context['machine']}. Full-size LMDM ({context['model']}) with seeded random weights.",
        (
            f"The machine is shared with other jobs: load average before {context['load_before']}, after "
            f"{context['load_after']}. Every time is the median of {context['runs']} runs, interleaved (each "
            "configuration once per round) so that load changes hit all of them alike; treat single-digit "
            "percent differences as noise. Speed-ups are ratios of wall-time medians; the process CPU time "
            "(both threads, spin-waits included) is listed as a second, less load-sensitive view."
        ),
        "",
        f"## Reference settings: DDIM {REFERENCE_STEPS} steps, eta 1, guidance {GUIDANCE:g}",
        "",
        "| implementation | network passes | window time (s) | speed-up | CPU time (s) | CPU speed-up |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        (
            f"| original structure: 2 guided forward passes per step, condition encoded in each | "
            f"{original.evaluations} | {original.median_s:.3f} | 1.00x | {original.median_cpu_s:.2f} | "
            "1.00x |"
        ),
        (
            f"| ours: condition + cross-attention K/V once per window, branches as one batch | "
            f"{ours.evaluations} (x2 batched) | {ours.median_s:.3f} | "
            f"{original.median_s / ours.median_s:.2f}x | {ours.median_cpu_s:.2f} | "
            f"{original.median_cpu_s / ours.median_cpu_s:.2f}x |"
        ),
        "",
        (
            "Same x_T and step noises: max relative difference ours vs original structure "
            f"{structure_diff:.1e} (required <= 1e-5)."
        ),
        "",
    ]
    if fast is not None:
        lines += [
            "## Fast choice",
            "",
            (
                f"`sampler={FAST_SAMPLER[0]} sampler.steps={FAST_SAMPLER[1]}`: {fast.median_s:.3f} s per "
                f"window, {original.median_s / fast.median_s:.1f}x faster than the reference 50-step run "
                f"(original structure; required >= {FAST_MIN_SPEEDUP:g}x) and "
                f"{ours.median_s / fast.median_s:.1f}x faster than our DDIM {REFERENCE_STEPS}. Error against "
                f"the converged solution (RMS / max relative): {fast.error_rms:.3f} / {fast.error_max:.3f}, "
                f"next to DDIM {REFERENCE_STEPS}'s (reference, eta 1) {ddim50.error_rms:.3f} / "
                f"{ddim50.error_max:.3f}."
            ),
            "",
        ]
    qualifying = [row for row in rows[1:] if original.median_s / row.median_s >= FAST_MIN_SPEEDUP]
    if qualifying:
        best = min(qualifying, key=lambda row: row.error_rms)
        lines += [
            (
                f"Of the configurations measured >= {FAST_MIN_SPEEDUP:g}x faster than the reference run, the "
                f"one closest to the converged solution is `sampler={best.sampler} "
                f"sampler.steps={best.steps}` ({original.median_s / best.median_s:.1f}x, RMS error "
                f"{best.error_rms:.3f})."
            ),
            "",
        ]
    lines += [
        "## Every sampler",
        "",
        (
            "Error: against the converged solution (the same x_T and condition solved by deterministic DDIM "
            f"with {context['converged_steps']} steps); RMS = ||x - x*|| / ||x*||, max = max|x - x*| / "
            f"max|x*|. Speed-up: against the original structure at DDIM {REFERENCE_STEPS}."
        ),
        "",
        (
            "| sampler | steps | network evaluations | window time (s) | speed-up | CPU time (s) | RMS rel "
            "error | max rel error | every run (s) |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    order = list(SAMPLERS)
    for row in rows[:1] + sorted(rows[1:], key=lambda r: (order.index(r.sampler), r.steps)):
        label = row.sampler if row.label == row.sampler else f"{row.sampler} ({row.label})"
        runs = ", ".join(f"{t:.2f}" for t in row.times)
        lines.append(
            f"| {label} | {row.steps} | {row.evaluations} | {row.median_s:.3f} | "
            f"{original.median_s / row.median_s:.1f}x | {row.median_cpu_s:.2f} | {row.error_rms:.4f} | "
            f"{row.error_max:.4f} | {runs} |"
        )
    lines += ["", f"![error vs time]({png_name})", "", NOTES]
    return "\n".join(lines) + "\n"


NOTES = """## Reading the numbers

- `ddim` is the reference sampler (stochastic, eta 1): it adds fresh noise at every step, so it does not \
converge
  to the deterministic (ODE) solution the errors are measured against; its error is the distance between a
  stochastic sample and the ODE sample from the same x_T, not a discretisation error. `sampler.eta=0`
  gives the deterministic variant, which equals `euler` wherever the two time grids coincide (1000 / steps
  integral).
- `heun` evaluates the network 2 * steps - 1 times per window; the others once per step. Each evaluation is \
one
  guided pass: the conditional and unconditional branches as one batch of 2 (guidance 1.0 runs one branch).
  The "original structure" row counts its two separate passes per step.
- `heun` needs many steps here: Ditto's cosine schedule with betas clipped at 0.999 gives
  sigma_max = sqrt((1 - alpha-bar_999) / alpha-bar_999), about 2.0e4, and Heun's trapezoidal correction
  multiplies the change of D(x, t) between t and t_next by about sigma_t / (2 sigma_next), i.e. by hundreds
  to thousands on the first step. `dpmpp_2m` and `unipc` step in log-SNR with data (x_0) prediction and
  stay bounded; `euler` is first-order (it equals deterministic DDIM).
- The weights are random, and an untrained network's x_0 prediction still changes by O(1) with t at small t
  (the sinusoidal time embedding has frequencies up to one radian per training step). The last evaluation,
  at t = 1000 / steps - 1 on every grid here, then dominates the answer: at equal steps the deterministic
  solvers land at nearly the same error whatever their order, and even 50 steps (last t = 19) stay about 0.3
  from the 250-step solution (last t = 3). So the error columns rank samplers on this network only; rerun the
  benchmark with the trained checkpoint before choosing a sampler by error. The times do not depend on the
  weights.
- On a loaded machine every parallel operation can be delayed by other jobs, which favours the implementation
  with fewer, larger operations (ours) in wall time. With passive OpenMP waits the CPU time is close to the
  work done, so the CPU-time speed-up is the better predictor of the wall-time ratio on a quiet machine.
- What makes ours faster at identical output: the condition encoder, the cross-attention keys/values of the \
80
  condition tokens (8 layers) and every time-dependent input of the grid (time MLP, FiLM modulations, \
time-token
  keys/values) are computed once per window; per step only the decoder runs, on one batch holding both \
guidance
  branches, which share the input projection and the first layer's self-attention.
"""


def write_plot(path: Path, rows: list[Row]) -> None:
    """Error (RMS, log scale) against median window time, one line per sampler, the reference as a star."""
    try:
        import matplotlib  # optional: only this report needs it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: skipping {path} (pip install matplotlib)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name in dict.fromkeys(row.sampler for row in rows[1:]):
        group = sorted((row for row in rows[1:] if row.sampler == name), key=lambda r: r.steps)
        ax.plot([r.median_s for r in group], [r.error_rms for r in group], marker="o", label=name)
        for r in group:
            ax.annotate(
                str(r.steps), (r.median_s, r.error_rms), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
    for row, marker in ((rows[0], "*"), (rows[1], "P")):
        ax.plot([row.median_s], [row.error_rms], marker=marker, markersize=13, linestyle="none",
                color="black", label=f"{row.label}, DDIM {REFERENCE_STEPS} (reference settings)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wall time per 80-frame window (s, median)")
    ax.set_ylabel("RMS relative error vs converged solution")
    ax.set_title("LMDM samplers (random weights, CPU, 2 threads); labels: steps")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
