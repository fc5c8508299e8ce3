"""``python -m ditto_research.export.tensorrt``: TensorRT engines from the ONNX files of
``python -m ditto_research.export.onnx``.

    python -m ditto_research.export.tensorrt onnx_dir=checkpoints/ditto_onnx [engine_dir=DIR] \\
        [precision=fp16|fp32]

Built with the TensorRT (>= 10) Python API, no custom plugin:

- 5-D grid sampling: TensorRT >= 11.2 parses the native ONNX ``GridSample``; below that the graph's grid
  samples (native ones, and the official file's ``GridSample3D`` plugin node) are rewritten into the
  gather/trilinear decomposition before parsing.
- fp16: the renderer networks build in fp16 with every grid-sample layer pinned to fp32; the motion extractor,
  stitching MLP, LMDM and HuBERT build in fp32 (as the original's conversion script does).
- Dynamic axes get an optimisation profile (batch 1..max_batch, HuBERT samples per ``hubert_samples``).
- A timing cache is read and updated across builds.
- The LMDM's cached pair (``python -m ditto_research.export.onnx lmdm_form=cached``:
  ``lmdm_v0.4_hubert_memory.onnx`` and ``_step.onnx``) is built next to the official LMDM, in fp32, whenever
  its files are in ``onnx_dir``.
- Engine names carry the GPU and TensorRT version (``decoder_fp16.NVIDIA-H100-80GB-HBM3.trt10.7.0.engine``),
  so the runtime detects an engine from another machine; a ``.json`` sidecar keeps the ONNX file's metadata.

Unverified here: the development machines have no GPU and no TensorRT. The pure parts are unit-tested.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ditto_research.apps import HydraApp
from ditto_research.atomic import write_atomically
from ditto_research.backends.base import FP32_NETWORKS, LMDM_PAIR_IO, NETWORK_IO, get_graph_io
from ditto_research.backends.onnx import metadata as onnx_metadata
from ditto_research.backends.onnx import read_checked_model, rewrite_grid_samples
from ditto_research.backends.tensorrt import engine_file_name, gpu_slug, import_tensorrt, sidecar_path
from ditto_research.config import to_config
from ditto_research.errors import ExportError
from ditto_research.export.config import TensorRTExportConfig, register_export_configs

__all__ = [
    "APP",
    "NATIVE_GRID_SAMPLE_3D_TRT",
    "ShapeProfile",
    "build_engine",
    "engine_graphs",
    "engine_precision",
    "is_fp32_layer",
    "needs_decomposed_grid_sample",
    "profile_shapes",
    "run_build",
]

NATIVE_GRID_SAMPLE_3D_TRT = (11, 2)  # first TensorRT whose ONNX parser takes a 5-D GridSample


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def needs_decomposed_grid_sample(trt_version: str) -> bool:
    """True when this TensorRT cannot parse a 5-D ``GridSample`` (before 11.2)."""
    return version_tuple(trt_version)[:2] < NATIVE_GRID_SAMPLE_3D_TRT


def engine_precision(network: str, requested: str) -> str:
    """The precision an engine is built (and named) with: fp32 for :data:`FP32_NETWORKS`."""
    return "fp32" if network in FP32_NETWORKS else requested


def is_fp32_layer(layer_name: str, layer_type: str) -> bool:
    """Layers kept in fp32 inside an fp16 engine: every grid sample, native or decomposed."""
    return (
        layer_type.upper().endswith("GRID_SAMPLE")
        or "grid_sample" in layer_name.lower()
        or "GridSample" in layer_name
    )


@dataclass(frozen=True)
class ShapeProfile:
    """min / opt / max shape of one dynamic input."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


def profile_shapes(
    network: str,
    input_name: str,
    shape: Sequence[int],
    max_batch: int = 1,
    hubert_samples: Sequence[int] = (3240, 6480, 12960),
) -> ShapeProfile | None:
    """The optimisation profile of one input (``shape`` with -1 for dynamic axes), or None when it is static.

    Axis 0 is the batch (1 / 1 / max_batch); HuBERT's axis 1 is its sample count (``hubert_samples``). Any
    other dynamic axis cannot be guessed and is an ExportError naming the input.
    """
    dims = [int(d) for d in shape]
    if all(d > 0 for d in dims):
        return None
    low, opt, high = list(dims), list(dims), list(dims)
    for axis, dim in enumerate(dims):
        if dim > 0:
            continue
        if axis == 0:
            low[axis], opt[axis], high[axis] = 1, 1, max_batch
        elif network == "hubert" and input_name == "input_values" and axis == 1:
            low[axis], opt[axis], high[axis] = (int(v) for v in hubert_samples)
        else:
            raise ExportError(
                f"{network}.onnx input {input_name} has a dynamic axis {axis} (shape {dims}) that has no "
                "profile; export it with static sizes (python -m ditto_research.export.onnx "
                "dynamic_batch=false)"
            )
    return ShapeProfile(input_name, tuple(low), tuple(opt), tuple(high))


def _parse(trt: Any, network_def: Any, logger: Any, model_bytes: bytes, label: str) -> None:
    parser = trt.OnnxParser(network_def, logger)
    if not parser.parse(model_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {label}: {errors}")


def _pin_fp32_layers(trt: Any, network_def: Any) -> int:
    pinned = 0
    for index in range(network_def.num_layers):
        layer = network_def.get_layer(index)
        if not is_fp32_layer(layer.name, str(layer.type)):
            continue
        if layer.type in (
            trt.LayerType.SHAPE,
            trt.LayerType.CONSTANT,
            trt.LayerType.SHUFFLE,
            trt.LayerType.GATHER,
            trt.LayerType.CONCATENATION,
            trt.LayerType.SLICE,
            trt.LayerType.IDENTITY,
        ):
            continue  # index plumbing: no arithmetic to protect
        layer.precision = trt.float32
        for out in range(layer.num_outputs):
            if layer.get_output(out).dtype in (trt.float32, trt.float16):
                layer.set_output_type(out, trt.float32)
        pinned += 1
    return pinned


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    network: str,
    precision: str,
    cfg: TensorRTExportConfig,
    timing_cache: Path,
) -> Path:
    """Parse, configure (precision, profiles, timing cache) and build one engine; written atomically."""
    trt = import_tensorrt("python -m ditto_research.export.tensorrt")
    model = read_checked_model(onnx_path, get_graph_io(network))
    if needs_decomposed_grid_sample(trt.__version__):
        rewrite_grid_samples(model, "decomposed")
    else:
        rewrite_grid_samples(model, "native")  # the official plugin node -> native GridSample
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network_def = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    _parse(trt, network_def, logger, model.SerializeToString(), str(onnx_path))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gib * (1 << 30)))
    config.builder_optimization_level = cfg.builder_optimization_level
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _pin_fp32_layers(trt, network_def)
    profile = builder.create_optimization_profile()
    dynamic = False
    for index in range(network_def.num_inputs):
        tensor = network_def.get_input(index)
        shapes = profile_shapes(network, tensor.name, tuple(tensor.shape), cfg.max_batch, cfg.hubert_samples)
        if shapes is not None:
            profile.set_shape(shapes.name, shapes.min, shapes.opt, shapes.max)
            dynamic = True
    if dynamic:
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network_def, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build {engine_path.name} from {onnx_path} (see the log above)")
    write_atomically(engine_path, lambda f: f.write(bytes(serialized)))
    write_atomically(timing_cache, lambda f: f.write(bytes(config.get_timing_cache().serialize())))
    sidecar = {"source": str(onnx_path), "metadata": onnx_metadata(model), "trt_version": trt.__version__}
    write_atomically(sidecar_path(engine_path), lambda f: f.write(json.dumps(sidecar, indent=2).encode()))
    return engine_path


def engine_graphs(onnx_dir: Path, networks: Sequence[str] | None) -> list[str]:
    """The graphs to build from ``onnx_dir``: the requested networks (None: every network with a file there),
    with the LMDM as its official file and/or its cached pair, whichever of them is there.

    A requested LMDM with neither keeps the name ``lmdm`` (its build then reports the missing file).
    """
    present = [n for n, io in NETWORK_IO.items() if (onnx_dir / io.onnx_file).is_file()]
    has_pair = all((onnx_dir / io.onnx_file).is_file() for io in LMDM_PAIR_IO.values())
    wanted = (
        list(networks) if networks else present + (["lmdm"] if has_pair and "lmdm" not in present else [])
    )
    graphs: list[str] = []
    for name in wanted:
        if name != "lmdm":
            graphs.append(name)
            continue
        if "lmdm" in present or not has_pair:
            graphs.append("lmdm")
        if has_pair:
            graphs.extend(LMDM_PAIR_IO)
    return graphs


def run_build(cfg: TensorRTExportConfig, log: Any = print) -> list[Path]:
    """Build the requested engines; returns their paths (existing ones are kept unless ``overwrite``)."""
    import torch

    trt = import_tensorrt("python -m ditto_research.export.tensorrt")
    if not torch.cuda.is_available():
        raise ExportError("python -m ditto_research.export.tensorrt needs a CUDA GPU visible to torch")
    gpu = torch.cuda.get_device_name()
    onnx_dir = Path(cfg.onnx_dir)
    if not onnx_dir.is_dir():
        raise ExportError(
            f"ONNX folder {onnx_dir} does not exist; write it first with python -m ditto_research.export.onnx"
        )
    engine_dir = Path(cfg.engine_dir) if cfg.engine_dir else onnx_dir.parent / f"ditto_trt_{gpu_slug(gpu)}"
    engine_dir.mkdir(parents=True, exist_ok=True)
    timing_cache = Path(cfg.timing_cache) if cfg.timing_cache else engine_dir / "timing.cache"
    names = engine_graphs(onnx_dir, cfg.networks)
    if not names:
        raise ExportError(
            f"no ONNX files of the Ditto networks in {onnx_dir}; write them with python -m "
            "ditto_research.export.onnx"
        )
    built = []
    for name in names:
        precision = engine_precision(name, cfg.precision)
        io = get_graph_io(name)
        path = engine_dir / engine_file_name(io.stem, precision, gpu, trt.__version__)
        if path.is_file() and not cfg.overwrite:
            log(f"keeping {path} (overwrite=true rebuilds it)")
        else:
            log(f"building {path.name} ({precision}) from {onnx_dir / io.onnx_file} ...")
            build_engine(onnx_dir / io.onnx_file, path, name, precision, cfg, timing_cache)
            log(f"wrote {path}")
        built.append(path)
    log(
        f"engines for {gpu} / TensorRT {trt.__version__} in {engine_dir}: use backend=tensorrt "
        f"backend.engine_dir={engine_dir}"
    )
    return built


register_export_configs()

# The schema is the whole config (no YAML); each engine is written atomically, so a stop keeps whole files.
APP = HydraApp(
    "export_tensorrt",
    stopped="engines finished before the stop are kept, none half written",
    config_path=None,
)


@APP.main
def main(cfg: DictConfig) -> None:
    run_build(to_config(cfg, TensorRTExportConfig))


if __name__ == "__main__":
    APP.run(main)
