"""One-shot device check: parity, render speed, LMDM speed, end-to-end fps, latency and capacity on one GPU.

    python benchmarks/gpu_check.py [--minutes 6] [--out gpu_check] [--device cuda] [--wheels DIR] [--quick]

Needs no weights (``model=untrained``: full-size networks with seeded random weights) and no MediaPipe: the
source is registered with ``face=given`` on synthetic landmarks of a synthetic portrait, the speech features
are ``audio_encoder=precomputed`` random rows. Each part runs in its own child process with its share of the
time budget, so one failure (or a hang) does not lose the rest; every part writes its own JSON, and the parent
writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out`` even when parts failed. ``--wheels DIR``
puts the wheels found there on the path (hydra-core, omegaconf, antlr4, PyYAML, tqdm: a machine image with
only torch + numpy + OpenCV runs the check). ``--device cpu --quick`` is the dry run the test suite makes.

Parts:
  info      card, driver, CUDA, torch, onnxruntime providers, TensorRT if importable
  parity    every network on the device vs the CPU in float32 (max rel error), the decoder in bf16 / fp16
            (PSNR against its fp32 output)
  render    warp + decode ms / frame: eager / CUDA graphs / torch.compile x batch 1 / 4 / 8 x fp32 / bf16
  lmdm      one 80-frame window: ddim 50 and 10 steps, dpmpp_2m 10 and 5 (if diffusers is importable)
  offline   end-to-end fps of a 10 s clip at 50 / 10 / 5 steps with the fastest render setting of ``render``
  online    first-frame latency and lag p50 / p95 of a stream fed at 1x
  streams   how many concurrent 1x streams stay real time (lag p95 under 0.5 s)
  tensorrt  engines built from ONNX exports and timed, when a TensorRT wheel is present (else said so)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PARTS = ("info", "parity", "render", "lmdm", "offline", "online", "streams", "tensorrt")
SHARE = {
    "info": 0.3,
    "parity": 1.2,
    "render": 2.5,
    "lmdm": 1.0,
    "offline": 2.0,
    "online": 1.0,
    "streams": 1.5,
    "tensorrt": 0.5,
}
REPO = Path(__file__).resolve().parents[1]


# ---- helpers shared by the parts (run in the child) -------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_ms(fn, device: str, repeats: int, warmup: int = 2) -> float:
    """Median wall ms of ``fn()`` (synchronised), after ``warmup`` calls."""
    import statistics

    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _peak_mb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def _inputs(folder: Path, seconds: float, quick: bool) -> dict[str, Any]:
    """A synthetic portrait with synthetic landmarks (face=given), random 25 Hz features (+ silence rows)."""
    import cv2
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    size = 256 if quick else 512
    image = (rng.random((size, size, 3)) * 60 + 100).astype(np.uint8)
    cv2.ellipse(image, (size // 2, size // 2), (size // 5, size // 4), 0, 0, 360, (180, 140, 120), -1)
    cv2.imwrite(str(folder / "portrait.png"), image)
    sys.path.insert(0, str(REPO))
    from tests.helpers import synthetic_landmarks

    np.savez(folder / "face.npz", **synthetic_landmarks(center=(size / 2, size / 2), size=size / 2.5))
    frames = int(np.ceil(seconds * 25))
    np.savez(
        folder / "features.npz",
        features=rng.standard_normal((frames + 10, 1024)).astype(np.float32) * 0.5,
        silence=np.zeros((80, 1024), np.float32),
    )
    audio = (rng.standard_normal(int(seconds * 16000)) * 0.05).astype(np.float32)
    return {"folder": folder, "audio": audio, "frames": frames}


def _overrides(args: argparse.Namespace, folder: Path, *extra: str) -> list[str]:
    model = "tiny" if args.quick else "untrained"
    return [
        f"model={model}",
        f"backend.device={args.device}",
        "face=given",
        f"face.landmarks={folder / 'face.npz'}",
        "face.min_face_size=0",
        "audio_encoder=precomputed",
        f"audio_encoder.path={folder / 'features.npz'}",
        "progress=false",
        *extra,
    ]


# ---- the parts ---------------------------------------------------------------------------------------------


def part_info(args: argparse.Namespace) -> dict[str, Any]:
    import platform

    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": args.device,
    }
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(
            card=torch.cuda.get_device_name(0),
            memory_gb=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16=torch.cuda.is_bf16_supported(),
        )
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            info["driver"] = smi.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = "nvidia-smi not available"
    try:
        import onnxruntime

        info["onnxruntime"] = f"{onnxruntime.__version__} {onnxruntime.get_available_providers()}"
    except ImportError:
        info["onnxruntime"] = "not installed"
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = "not installed"
    return info


def part_parity(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from ditto_research.backends.base import example_inputs
    from ditto_research.models import NETWORK_NAMES, load_network

    out: dict[str, Any] = {}
    for name in NETWORK_NAMES:
        cpu = load_network(name, seed=5, tiny=args.quick)
        gpu = load_network(name, seed=5, tiny=args.quick, device=args.device)
        inputs = example_inputs(name, cpu, batch=1, seed=1)
        with torch.no_grad():
            ref = cpu(*inputs)
            got = gpu(*(t.to(args.device) for t in inputs))
        refs = ref if isinstance(ref, (tuple, list)) else (ref,)
        gots = got if isinstance(got, (tuple, list)) else (got,)
        errors = [
            float((g.float().cpu() - r.float()).abs().max() / r.float().abs().max().clamp(min=1e-12))
            for g, r in zip(gots, refs)
        ]
        out[name] = {"fp32_max_rel_error": max(errors)}
    decoder = load_network("decoder", seed=5, tiny=args.quick, device=args.device)
    feature = example_inputs("decoder", decoder, batch=1, seed=2)[0].to(args.device)
    with torch.no_grad():
        reference = decoder(feature).float()
        for dtype in ("bf16", "fp16"):
            if args.device == "cpu" and dtype == "fp16":
                continue
            with torch.autocast(
                device_type=args.device.split(":")[0],
                dtype=getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[dtype]),
            ):
                low = decoder(feature).float()
            mse = float(((low - reference) ** 2).mean())
            out["decoder"][f"{dtype}_psnr_db"] = float(10 * np.log10(1.0 / max(mse, 1e-20)))
    return out


def part_render(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ditto_research.backends.pytorch import load_torch_network
    from ditto_research.pipeline.fast_render import FastRenderer

    sizes = (1, 4) if args.quick else (1, 4, 8)
    modes = ["eager"] + (["cuda_graphs"] if args.device.startswith("cuda") else [])
    if not (args.quick and args.device == "cpu"):  # a CPU dry run skips the minute-long Inductor compile
        modes.append("compile")
    precisions = ("fp32",) if args.quick else ("fp32", "bf16")
    rows = []
    deadline = time.monotonic() + args.budget * 0.9
    for precision in precisions:
        for mode in modes:
            if time.monotonic() > deadline:
                rows.append({"precision": precision, "mode": mode, "skipped": "time budget"})
                continue
            warp = load_torch_network("warp_network", args.device, precision, seed=2, tiny=args.quick)
            decoder = load_torch_network("decoder", args.device, precision, seed=3, tiny=args.quick)
            try:
                t0 = time.perf_counter()
                renderer = FastRenderer(
                    warp,
                    decoder,
                    args.device,
                    compile_networks=mode == "compile",
                    cuda_graphs=mode == "cuda_graphs",
                    batch_sizes=sizes,
                )
                setup_s = time.perf_counter() - t0
            except Exception as e:  # noqa: BLE001 - reported per row
                rows.append({"precision": precision, "mode": mode, "error": f"{type(e).__name__}: {e}"[:300]})
                continue
            for size in sizes:
                example = renderer._example(size)
                ms = _time_ms(
                    lambda r=renderer, e=example: r.render(*e), args.device, 3 if args.quick else 10
                )
                rows.append(
                    {
                        "precision": precision,
                        "mode": mode,
                        "batch": size,
                        "ms_per_frame": ms / size,
                        "fps": 1000 * size / ms,
                        "setup_s": setup_s,
                    }
                )
            renderer = None  # free its graphs and buffers before the next setting
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    return {"rows": rows, "peak_mb": _peak_mb(args.device)}


def part_lmdm(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from ditto_research.backends.pytorch import load_torch_network
    from ditto_research.diffusion.noise import make_noise
    from ditto_research.diffusion.samplers import make_window_sampler

    lmdm = load_torch_network("lmdm", args.device, seed=5, tiny=args.quick)
    gen = torch.Generator().manual_seed(0)
    kp = torch.randn((1, lmdm.motion_dim), generator=gen).to(args.device)
    cond = torch.randn((1, lmdm.seq_frames, lmdm.cond_dim), generator=gen).to(args.device)
    rows = []
    for name, steps in (("ddim", 50), ("ddim", 10), ("dpmpp_2m", 10), ("dpmpp_2m", 5)):
        try:
            sampler = make_window_sampler(
                lmdm, name, steps=steps, generator=make_noise("torch", 1, args.device)
            )
            ms = _time_ms(lambda s=sampler: s(kp, cond), args.device, 2 if args.quick else 5, warmup=1)
            rows.append({"sampler": name, "steps": steps, "ms_per_window": ms, "ms_per_frame": ms / 70})
        except Exception as e:  # noqa: BLE001 - e.g. diffusers missing on the device image
            rows.append({"sampler": name, "steps": steps, "error": f"{type(e).__name__}: {e}"[:300]})
    return {"rows": rows, "peak_mb": _peak_mb(args.device)}


def _best_render(args: argparse.Namespace) -> list[str]:
    """The fastest render setting the render part measured (from its JSON), as overrides."""
    path = Path(args.out) / "part_render.json"
    try:
        rows = [r for r in json.loads(path.read_text())["result"]["rows"] if "fps" in r]
    except (OSError, KeyError, ValueError):
        rows = []
    if not rows:
        return []
    best = max(rows, key=lambda r: r["fps"])
    extra = [f"backend.precision={best['precision']}", f"render.batch_size={best['batch']}"]
    if best["mode"] == "cuda_graphs":
        extra.append("backend.cuda_graphs=true")
    if best["mode"] == "compile":
        extra.append("backend.compile=true")
    return extra


def part_offline(args: argparse.Namespace) -> dict[str, Any]:
    from ditto_research.pipeline import Engine, TalkingHeadSession

    seconds = 2.0 if args.quick else 10.0
    data = _inputs(Path(args.out) / "inputs_offline", seconds, args.quick)
    render = _best_render(args)
    rows = []
    for steps in (50, 10, 5) if not args.quick else (5,):
        engine = Engine.from_overrides(_overrides(args, data["folder"], f"sampler.steps={steps}", *render))
        engine.load()
        session = TalkingHeadSession(engine)
        source = session.register(data["folder"] / "portrait.png")
        t0 = time.perf_counter()
        count = sum(1 for _ in session.frames(source, data["audio"]))
        elapsed = time.perf_counter() - t0
        source.media.close()
        rows.append({"steps": steps, "frames": count, "seconds": elapsed, "fps": count / elapsed})
    return {"render": render, "rows": rows, "peak_mb": _peak_mb(args.device)}


def _stream(args: argparse.Namespace, data: dict[str, Any], engine) -> dict[str, float]:
    from ditto_research.pipeline import StreamingSession

    session = StreamingSession(engine)
    session.start(data["folder"] / "portrait.png")
    frames = []
    import threading

    feeder = threading.Thread(target=session.feed, args=(data["audio"], True), daemon=True)
    feeder.start()
    for frame in session.frames():
        frames.append(frame.index)
    feeder.join()
    report = session.latency
    return {
        "frames": len(frames),
        "first_frame_s": report.first_frame_s,
        "lag_p50_s": report.p50_s,
        "lag_p95_s": report.p95_s,
        "lag_max_s": report.max_s,
        "missed_deadlines": report.missed_deadlines,
    }


def part_online(args: argparse.Namespace) -> dict[str, Any]:
    from ditto_research.pipeline import Engine

    data = _inputs(Path(args.out) / "inputs_online", 2.0 if args.quick else 10.0, args.quick)
    engine = Engine.from_overrides(
        _overrides(args, data["folder"], "+preset=realtime", *_best_render(args)[:1])
    )
    engine.load()
    result = _stream(args, data, engine)
    result["algorithmic_lookahead_s"] = 0.08 * 2  # chunksize (3, 5, 2): 2 frames of look-ahead
    return {"stream": result, "peak_mb": _peak_mb(args.device)}


def part_streams(args: argparse.Namespace) -> dict[str, Any]:
    import threading

    from ditto_research.pipeline import Engine

    data = _inputs(Path(args.out) / "inputs_streams", 2.0 if args.quick else 8.0, args.quick)
    engine = Engine.from_overrides(
        _overrides(args, data["folder"], "+preset=realtime", *_best_render(args)[:1])
    )
    engine.load()
    rows, deadline = [], time.monotonic() + args.budget * 0.85
    for count in (1, 2, 4, 6, 8, 12) if not args.quick else (1, 2):
        if time.monotonic() > deadline:
            break
        results: list[dict[str, float]] = []
        threads = [
            threading.Thread(
                target=lambda out=results: out.append(_stream(args, data, engine.derive(engine.cfg)))
            )
            for _ in range(count)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        worst = max((r["lag_p95_s"] or 0.0) for r in results) if results else float("inf")
        rows.append({"streams": count, "worst_lag_p95_s": worst, "real_time": worst < 0.5})
        if worst >= 0.5:
            break
    ok = [r["streams"] for r in rows if r["real_time"]]
    return {"rows": rows, "max_real_time_streams": max(ok) if ok else 0, "peak_mb": _peak_mb(args.device)}


def part_tensorrt(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return {"skipped": "no TensorRT wheel on this machine: engines not built (pip install tensorrt)"}
    from ditto_research.config import compose, to_config
    from ditto_research.export.config import ExportConfig, TensorRTExportConfig, register_export_configs
    from ditto_research.export.onnx import run_export
    from ditto_research.export.tensorrt import run_build

    onnx_dir = Path(args.out) / "onnx"
    register_export_configs()
    run_export(
        to_config(
            compose("export", ["model=untrained", f"output_dir={onnx_dir}", "verify=false"]), ExportConfig
        ),
        log=lambda _: None,
    )
    config = TensorRTExportConfig(onnx_dir=str(onnx_dir), engine_dir=str(Path(args.out) / "trt"))
    engines = run_build(config, log=lambda _: None)
    return {"engines": [str(e) for e in engines]}


# ---- the parent --------------------------------------------------------------------------------------------


def _child(args: argparse.Namespace, part: str, budget: float) -> dict[str, Any]:
    out = Path(args.out) / f"part_{part}.json"
    out.unlink(missing_ok=True)
    command = [
        sys.executable,
        __file__,
        "--part",
        part,
        "--out",
        args.out,
        "--device",
        args.device,
        "--budget",
        str(budget),
    ]
    if args.quick:
        command.append("--quick")
    if args.wheels:
        command += ["--wheels", args.wheels]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=budget, cwd=REPO)
        status = "ok" if proc.returncode == 0 and out.is_file() else f"failed (exit {proc.returncode})"
        tail = proc.stderr.strip().splitlines()[-3:]
    except subprocess.TimeoutExpired:
        status, tail = f"stopped at its time budget ({budget:.0f} s)", []
    record = json.loads(out.read_text()) if out.is_file() else {}
    record.update(part=part, status=status, wall_s=round(time.perf_counter() - t0, 1))
    if status != "ok":
        record["stderr_tail"] = tail
    return record


def _markdown(results: dict[str, Any]) -> str:
    lines = ["# GPU check", ""]
    info = results.get("info", {}).get("result", {})
    lines.append("Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    for part, record in results.items():
        lines += ["", f"## {part} ({record['status']}, {record['wall_s']} s)", ""]
        result = record.get("result", {})
        rows = result.get("rows")
        if isinstance(rows, list) and rows:
            keys = sorted(
                {k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99
            )
            lines.append("| " + " | ".join(keys) + " |")
            lines.append("|" + " --- |" * len(keys))
            for r in rows:
                cells = [f"{r[k]:.3g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys]
                lines.append("| " + " | ".join(cells) + " |")
        others = {k: v for k, v in result.items() if k != "rows"}
        if others:
            lines.append("```\n" + json.dumps(others, indent=1, default=str) + "\n```")
        if record.get("stderr_tail"):
            lines.append("stderr: " + " / ".join(record["stderr_tail"]))
    return "\n".join(lines) + "\n"


def _device_problem(device: str) -> str | None:
    """Why ``device`` cannot run the check here (one sentence naming what it needs), or None."""
    if device != "cuda":
        return None
    import torch

    if torch.cuda.is_available():
        return None
    build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
    return (
        f"the check needs a CUDA device and torch sees none (torch {torch.__version__}, {build}); run it on "
        "a GPU machine (docs/gpu.md), or make the dry run with --device cpu --quick"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0, help="the whole check's time budget")
    parser.add_argument("--out", default="gpu_check", help="folder for the JSON, the markdown and inputs")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--wheels", help="folder of pure-Python wheels to import from (hydra-core, ...)")
    parser.add_argument("--quick", action="store_true", help="tiny networks, short clips (a dry run)")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.wheels:
        sys.path[:0] = [str(p) for p in sorted(Path(args.wheels).glob("*.whl"))]
    sys.path.insert(0, str(REPO))
    problem = _device_problem(args.device)
    if problem:  # nothing is written: a report of tracebacks would read like a result
        print(f"error: {problem}", file=sys.stderr)
        return 2
    Path(args.out).mkdir(parents=True, exist_ok=True)

    if args.part:  # a child: one part, its JSON
        result = globals()[f"part_{args.part}"](args)
        (Path(args.out) / f"part_{args.part}.json").write_text(
            json.dumps({"result": result}, indent=1, default=str)
        )
        return 0

    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    total = args.minutes * 60
    weights = sum(SHARE[p] for p in parts)
    started, results = time.monotonic(), {}
    for part in parts:
        left = total - (time.monotonic() - started)
        budget = max(10.0, min(left, total * SHARE[part] / weights * 1.5))
        results[part] = _child(args, part, budget)
        print(f"{part}: {results[part]['status']} in {results[part]['wall_s']} s", flush=True)
    (Path(args.out) / "gpu_check.json").write_text(json.dumps(results, indent=1, default=str))
    (Path(args.out) / "gpu_check.md").write_text(_markdown(results))
    print(f"wrote {Path(args.out) / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
