"""ONNX Runtime backend: runs our exports (``python -m ditto_research.export.onnx``) and the official
``ditto_onnx/*.onnx``.

Every file is checked when it is loaded: it must exist, parse, and have the official input/output names and
ranks (:data:`~ditto_research.backends.base.NETWORK_IO`); otherwise one :class:`CheckpointError` names the
file and the export command that makes a good one.

The official ``warp_network.onnx`` calls the TensorRT plugin op ``GridSample3D``, which onnxruntime does not
have. It is rewritten in memory (the file is left untouched) into the standard 5-D ``GridSample`` when the
model's opset is >= 20, else into an equivalent decomposition into gathers and trilinear weights
(:func:`rewrite_grid_samples`; the TensorRT builder uses the same rewrite).

The LMDM loads as the cached pair (:mod:`ditto_research.backends.lmdm_pair`) when
``lmdm_v0.4_hubert_memory.onnx`` and ``lmdm_v0.4_hubert_step.onnx`` are in the folder (every sampler, any
guidance weight, the condition encoded once per window), else as the official guided step.

``device=cuda`` needs onnxruntime's CUDAExecutionProvider, and the session must actually run on it:
onnxruntime-gpu quietly falls back to the CPU when CUDA fails to start, which is reported here as an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ditto_research.backends.base import (
    FP32_NETWORKS,
    LMDM_PAIR_IO,
    Array,
    LmdmSampling,
    NetworkIO,
    bare_or_tuple,
    check_precision,
    from_numpy_like,
    get_io,
    to_numpy,
)
from ditto_research.errors import CheckpointError, ConfigError, InputError

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from ditto_research.backends.lmdm_pair import CachedPairLmdm

__all__ = [
    "METADATA_PREFIX",
    "OnnxLmdm",
    "OnnxNetwork",
    "check_onnx_device",
    "export_command",
    "graph_io",
    "lmdm_pair_paths",
    "load_onnx_network",
    "make_session",
    "open_lmdm_pair",
    "read_checked_model",
    "rewrite_grid_samples",
]

METADATA_PREFIX = (
    "ditto."  # our exports record precision, grid_sample, guidance_weight, model under this prefix
)
PLUGIN_GRID_SAMPLE_OPS = frozenset({"GridSample3D", "GridSample3d", "grid_sample_3d"})
NATIVE_GRID_SAMPLE_OPSET = 20  # first opset whose GridSample accepts 5-D inputs
_PADDING_MODES = {0: "zeros", 1: "border", 2: "reflection"}
_INTERPOLATION_MODES = {0: "linear", 1: "nearest"}


def export_command(
    onnx_dir: str | Path,
    networks: Iterable[str] | None = None,
    model: str = "ditto",
    lmdm_form: str | None = None,
) -> str:
    """The command that (re)writes ONNX files into ``onnx_dir`` (``lmdm_form=cached``: the LMDM pair)."""
    which = f" networks=[{','.join(networks)}]" if networks else ""
    form = f" lmdm_form={lmdm_form}" if lmdm_form else ""
    return f"python -m ditto_research.export.onnx model={model} output_dir={onnx_dir}{which}{form}"


# ------------------------------------------------------------------------------------------- reading + checks


def _rank(value_info: Any) -> int | None:
    tensor_type = value_info.type.tensor_type
    return len(tensor_type.shape.dim) if tensor_type.HasField("shape") else None


def graph_io(model: onnx.ModelProto) -> tuple[list[tuple[str, int | None]], list[tuple[str, int | None]]]:
    """(name, rank) of the graph's real inputs (initializers excluded) and of its outputs, in order."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [(v.name, _rank(v)) for v in model.graph.input if v.name not in initializers]
    return inputs, [(v.name, _rank(v)) for v in model.graph.output]


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    """Our ``ditto.*`` metadata entries (empty for the official files)."""
    return {
        p.key[len(METADATA_PREFIX) :]: p.value
        for p in model.metadata_props
        if p.key.startswith(METADATA_PREFIX)
    }


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def read_checked_model(path: str | Path, io: NetworkIO, export_model: str = "ditto") -> onnx.ModelProto:
    """Load ``path`` and check it against ``io``; every failure is a CheckpointError with the remedy (the
    export command for ``model=export_model``, the weights the run uses)."""
    import onnx

    path = Path(path)
    if io.name in LMDM_PAIR_IO:
        command = export_command(path.parent, ["lmdm"], model=export_model, lmdm_form="cached")
        remedy = f"export the pair with: {command}"
    else:
        remedy = f"export it with: {export_command(path.parent, [io.name], model=export_model)}"
    if not path.is_file():
        hint = "" if path.parent.is_dir() else f" (the folder {path.parent} does not exist either)"
        raise CheckpointError(f"ONNX file {path} for {io.name} is missing{hint}; {remedy}")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf DecodeError, missing external data, ...
        raise CheckpointError(
            f"{path} is not a readable ONNX model ({type(e).__name__}: {e}); {remedy}"
        ) from e
    problem = io.mismatch(*graph_io(model))
    if problem:
        raise CheckpointError(f"{path} does not have the {io.name} interface: {problem}; {remedy}")
    return model


# ---------------------------------------------------------------------------------------- grid sample rewrite


class _NodeWriter:
    """Appends uniquely named nodes and constants for one replaced node."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        out = output or self._name(op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=self._name(op_type), **attrs))
        return out

    def const(self, value: Any, dtype: Any, hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name


def _write_decomposed(w: _NodeWriter, volume: str, grid: str, output: str, align_corners: bool) -> None:
    """Trilinear sampling, zero padding: volume (N, C, D, H, W), grid (N, D', H', W', 3) ->
    (N, C, D', H', W').

    Same arithmetic and corner order as ``ditto_research.export.grid_sample.grid_sample_3d_decomposed``
    (opset >= 11 ops only).
    """
    from onnx import TensorProto

    one, two, zero = (w.const(v, np.float32) for v in (1.0, 2.0, 0.0))
    volume = w.op("Cast", volume, to=TensorProto.FLOAT)
    grid = w.op("Cast", grid, to=TensorProto.FLOAT)
    shape = w.op("Shape", volume)
    dim = {axis: w.op("Gather", shape, w.const(i, np.int64), axis=0) for i, axis in enumerate("NCDHW")}  # 0-d
    dim_1d = {axis: w.op("Gather", shape, w.const([i], np.int64), axis=0) for i, axis in enumerate("NC")}
    size_f = {axis: w.op("Cast", dim[axis], to=TensorProto.FLOAT) for axis in "DHW"}

    corners: dict[str, tuple[list[str], list[str], list[str], list[str]]] = {}
    for component, axis in enumerate("WHD"):  # grid holds (x, y, z) = (width, height, depth) coordinates
        coord = w.op("Gather", grid, w.const(component, np.int64), axis=4)  # (N, D', H', W')
        if align_corners:
            index = w.op("Mul", w.op("Div", w.op("Add", coord, one), two), w.op("Sub", size_f[axis], one))
        else:
            index = w.op("Div", w.op("Sub", w.op("Mul", w.op("Add", coord, one), size_f[axis]), one), two)
        low = w.op("Floor", index)
        high = w.op("Add", low, one)
        weights = [w.op("Sub", high, index), w.op("Sub", index, low)]
        last = w.op("Sub", size_f[axis], one)
        valid, clamped = [], []
        for corner in (low, high):
            valid.append(
                w.op("And", w.op("Not", w.op("Less", corner, zero)), w.op("Less", corner, size_f[axis]))
            )
            clamped.append(w.op("Cast", w.op("Max", w.op("Min", corner, last), zero), to=TensorProto.INT64))
        corners[axis] = ([low, high], weights, valid, clamped)

    voxels = w.op("Mul", w.op("Mul", dim["D"], dim["H"]), dim["W"])
    flat = w.op("Reshape", volume, w.op("Concat", dim_1d["N"], dim_1d["C"], w.const([-1], np.int64), axis=0))
    rows = w.op(
        "Reshape",
        w.op("Transpose", flat, perm=[0, 2, 1]),
        w.op("Concat", w.const([-1], np.int64), dim_1d["C"], axis=0),
    )
    batch_index = w.op("Range", w.const(0, np.int64), dim["N"], w.const(1, np.int64))
    offset = w.op("Reshape", w.op("Mul", batch_index, voxels), w.const([-1, 1, 1, 1], np.int64))

    total = None
    for iz in (0, 1):
        for iy in (0, 1):
            for ix in (0, 1):
                _, wx, vx, cx = corners["W"]
                _, wy, vy, cy = corners["H"]
                _, wz, vz, cz = corners["D"]
                valid = w.op("And", w.op("And", vx[ix], vy[iy]), vz[iz])
                index = w.op(
                    "Add", w.op("Mul", w.op("Add", w.op("Mul", cz[iz], dim["H"]), cy[iy]), dim["W"]), cx[ix]
                )
                values = w.op("Gather", rows, w.op("Add", index, offset), axis=0)  # (N, D', H', W', C)
                weight = w.op("Mul", w.op("Mul", wx[ix], wy[iy]), wz[iz])
                expanded = w.op("Concat", w.op("Shape", weight), w.const([1], np.int64), axis=0)
                term = w.op(
                    "Where",
                    w.op("Reshape", valid, expanded),
                    w.op("Mul", values, w.op("Reshape", weight, expanded)),
                    zero,
                )
                total = term if total is None else w.op("Add", total, term)
    assert total is not None
    w.op("Transpose", total, output=output, perm=[0, 4, 1, 2, 3])


def _value_ranks(model: onnx.ModelProto) -> dict[str, int]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError):
        inferred = model  # unknown custom ops and the like: fall back to what the file declares
    graph = inferred.graph
    ranks = {
        v.name: r for v in [*graph.input, *graph.value_info, *graph.output] if (r := _rank(v)) is not None
    }
    ranks.update({init.name: len(init.dims) for init in graph.initializer})
    return ranks


def _attr(node: Any, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return int(attribute.i)
    return default


def _sampling_modes(node: Any) -> tuple[int, int, bool]:
    """(interpolation, padding, align_corners) of a grid-sample node, in the plugin's integer codes
    (interpolation 0 bilinear / 1 nearest; padding 0 zeros / 1 border / 2 reflection; -1 unknown)."""
    if node.op_type in PLUGIN_GRID_SAMPLE_OPS:
        interpolation, padding = _attr(node, "interpolation_mode", 0), _attr(node, "padding_mode", 0)
    else:
        text = {a.name: a.s.decode() for a in node.attribute if a.type == a.STRING}
        interpolation = {"linear": 0, "bilinear": 0, "nearest": 1}.get(text.get("mode", "linear"), -1)
        padding = {v: k for k, v in _PADDING_MODES.items()}.get(text.get("padding_mode", "zeros"), -1)
    return interpolation, padding, bool(_attr(node, "align_corners", 0))


def _replacement(node: Any, name: str, use_native: bool) -> tuple[list[Any], list[Any]]:
    """(nodes, initializers) computing what grid-sample ``node`` computes, natively or decomposed."""
    from onnx import helper

    interpolation, padding, align = _sampling_modes(node)
    if use_native:
        if interpolation not in _INTERPOLATION_MODES or padding not in _PADDING_MODES:
            raise CheckpointError(f"node {name}: unsupported GridSample3D modes ({interpolation}, {padding})")
        native = helper.make_node(
            "GridSample",
            list(node.input[:2]),
            [node.output[0]],
            name=f"{name}/native",
            mode=_INTERPOLATION_MODES[interpolation],
            padding_mode=_PADDING_MODES[padding],
            align_corners=int(align),
        )
        return [native], []
    if (interpolation, padding) != (0, 0):
        raise CheckpointError(
            f"node {name}: only bilinear sampling with zero padding can be decomposed "
            f"(got interpolation {interpolation}, padding {padding})"
        )
    writer = _NodeWriter(f"{name}/grid_sample_decomposed")
    _write_decomposed(writer, node.input[0], node.input[1], node.output[0], align)
    return writer.nodes, writer.initializers


def rewrite_grid_samples(model: onnx.ModelProto, target: Literal["native", "decomposed"] = "native") -> int:
    """Replace 5-D grid sampling nodes in place; returns how many were replaced.

    Plugin ``GridSample3D`` nodes always go: into a native ``GridSample`` when ``target`` is native and the
    opset allows it (>= 20), otherwise into the decomposition. With ``target="decomposed"`` native 5-D
    ``GridSample`` nodes are decomposed too (runtimes without 5-D support, e.g. TensorRT < 11.2).
    """
    ranks = _value_ranks(model) if target == "decomposed" else {}
    native_ok = target == "native" and default_opset(model) >= NATIVE_GRID_SAMPLE_OPSET
    new_nodes: list[Any] = []
    replaced = 0
    for i, node in enumerate(model.graph.node):
        is_plugin = node.op_type in PLUGIN_GRID_SAMPLE_OPS
        is_native_3d = (
            target == "decomposed"
            and node.domain in ("", "ai.onnx")
            and node.op_type == "GridSample"
            and ranks.get(node.input[0]) == 5
        )
        if not (is_plugin or is_native_3d):
            new_nodes.append(node)
            continue
        nodes, initializers = _replacement(node, node.name or f"grid_sample_{i}", use_native=native_ok)
        new_nodes.extend(nodes)
        model.graph.initializer.extend(initializers)
        replaced += 1
    if replaced:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        used = {n.domain for n in model.graph.node}
        keep = [e for e in model.opset_import if e.domain in ("", "ai.onnx") or e.domain in used]
        del model.opset_import[:]
        model.opset_import.extend(keep)
    return replaced


# ---------------------------------------------------------------------------------------------- sessions


def check_onnx_device(device: str) -> tuple[str, int]:
    """``cpu`` / ``cuda`` / ``cuda:N`` -> (kind, index); CUDA needs onnxruntime's CUDAExecutionProvider."""
    import onnxruntime as ort

    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise ConfigError(f"backend.device={device!r} is not valid; choose one of: cpu, cuda, cuda:N")
    if kind == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ConfigError(_no_cuda_message(device, "the networks"))
    return kind, int(index or 0)


def _no_cuda_message(device: str, label: str) -> str:
    import onnxruntime as ort

    return (
        f"backend=onnx backend.device={device}: onnxruntime {ort.__version__} cannot run {label} on CUDA "
        f"(providers available: {', '.join(ort.get_available_providers())}); "
        "install onnxruntime-gpu matching your CUDA and cuDNN, or use backend.device=cpu"
    )


def make_session(
    model: onnx.ModelProto | str | Path, device: str = "cpu", num_threads: int = 0, label: str = "model"
) -> onnxruntime.InferenceSession:
    """An onnxruntime session on ``device``; CUDA must be available and actually used (no silent fallback)."""
    import onnxruntime as ort

    kind, index = check_onnx_device(device)
    providers: list[Any] = ["CPUExecutionProvider"]
    if kind == "cuda":
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if num_threads > 0:
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
    # Pipeline stages run side by side: spinning worker threads would steal their cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    try:
        session = ort.InferenceSession(source, options, providers=providers)
    except (
        Exception
    ) as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, NotImplemented, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"onnxruntime cannot load {label}: {first}") from e
    if kind == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise ConfigError(
            _no_cuda_message(device, label) + " (the CUDA provider failed to start and onnxruntime "
            "fell back to the CPU)"
        )
    return session


class OnnxNetwork:
    """One network on onnxruntime; ``runner(*inputs)`` as described in :mod:`ditto_research.backends.base`."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        device: str = "cpu",
        precision: str = "fp32",
        num_threads: int = 0,
        io: NetworkIO | None = None,
        export_model: str = "ditto",
    ) -> None:
        """``io``: the interface to check the file against (default: network ``name``'s official one);
        ``export_model``: the weights named in the export command of an error message."""
        check_precision("onnx", precision)
        self.name = name
        self.io: NetworkIO = io or get_io(name)
        self.path = Path(path)
        model = read_checked_model(self.path, self.io, export_model)
        self.metadata = metadata(model)
        self.precision = self.metadata.get("precision", "fp32")  # the official files are fp32
        expected = "fp32" if name in FP32_NETWORKS else precision
        if self.precision != expected:
            raise ConfigError(
                f"backend.precision={precision} runs {name} in {expected}, but {self.path} is an "
                f"{self.precision} model; write matching files with "
                f"`python -m ditto_research.export.onnx precision={precision} output_dir=DIR` "
                "and set backend.onnx_dir=DIR"
            )
        self.rewritten = rewrite_grid_samples(model, "native")
        self._input_names = [n for n, _ in graph_io(model)[0]]
        self._input_dtypes = [spec.dtype for spec in self.io.inputs]
        # Input / output dims (0 = dynamic); the model proto itself is not kept (onnxruntime holds its own).
        self._input_dims = {
            v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input
        }
        self._output_dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.output]
        self._output_names = [v.name for v in model.graph.output]
        self.session = make_session(
            self.path if not self.rewritten else model, device, num_threads, str(self.path)
        )
        self.device = device

    def static_dim(self, input_name: str, axis: int, default: int) -> int:
        """A fixed input dimension of the graph, or ``default`` where the file leaves it dynamic."""
        dims = self._input_dims[input_name]
        value = dims[axis] if axis < len(dims) else 0
        return int(value) if value > 0 else default

    def run_numpy(self, *inputs: Array) -> list[np.ndarray]:
        if len(inputs) != len(self._input_names):
            raise InputError(
                f"{self.name} takes {len(self._input_names)} inputs {self._input_names}, got {len(inputs)}"
            )
        feeds = {
            name: to_numpy(value, dtype)
            for name, value, dtype in zip(self._input_names, inputs, self._input_dtypes)
        }
        try:
            return self.session.run(None, feeds)
        except Exception as e:  # onnxruntime reports bad shapes as its own exception types
            shapes = {name: tuple(v.shape) for name, v in feeds.items()}
            raise InputError(
                f"{self.path.name} rejected inputs {shapes}: {str(e).strip().splitlines()[0]}"
            ) from e

    def __call__(self, *inputs: Array) -> Any:
        return bare_or_tuple(from_numpy_like(self.run_numpy(*inputs), inputs[0]))

    def output_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """The outputs' shapes for a batch of ``batch`` (every other axis must be fixed in the graph)."""
        shapes = []
        for name, dims in zip(self._output_names, self._output_dims):
            rest = dims[1:]
            if any(d <= 0 for d in rest):
                raise ConfigError(
                    f"{self.path.name}: output {name} has dynamic axes {dims}; bind it by shape"
                )
            shapes.append((batch, *rest))
        return shapes

    def run_bound(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> list[Any]:
        """Run with onnxruntime IO binding: torch ``inputs`` and preallocated torch ``outputs`` on the
        session's device are bound by pointer, so on CUDA nothing goes through host memory (the cached LMDM
        pair keeps its memory on the GPU between steps this way). Returns ``outputs``."""
        import torch

        kind, index = check_onnx_device(self.device)
        target = torch.device("cuda", index) if kind == "cuda" else torch.device("cpu")
        binding = self.session.io_binding()
        keep = []  # the bound buffers must outlive the run
        for name, value, dtype in zip(self._input_names, inputs, self._input_dtypes):
            tensor = torch.as_tensor(value).to(device=target, dtype=getattr(torch, dtype)).contiguous()
            keep.append(tensor)
            binding.bind_input(name, kind, index, np.dtype(dtype), tuple(tensor.shape), tensor.data_ptr())
        for name, out in zip(self._output_names, outputs):
            if not out.is_contiguous() or out.device != target:
                raise InputError(f"{self.path.name}: output {name} must be a contiguous tensor on {target}")
            element = np.dtype(str(out.dtype).removeprefix("torch."))
            binding.bind_output(name, kind, index, element, tuple(out.shape), out.data_ptr())
        try:
            self.session.run_with_iobinding(binding)
        except Exception as e:  # onnxruntime reports bad shapes as its own exception types
            shapes = {n: tuple(t.shape) for n, t in zip(self._input_names, keep)}
            raise InputError(
                f"{self.path.name} rejected inputs {shapes}: {str(e).strip().splitlines()[0]}"
            ) from e
        return list(outputs)


class OnnxLmdm(LmdmSampling, OnnxNetwork):
    """The guided LMDM step on onnxruntime, with the DDIM sampler interface of :class:`LmdmSampling`."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        device: str = "cpu",
        precision: str = "fp32",
        num_threads: int = 0,
        export_model: str = "ditto",
    ) -> None:
        OnnxNetwork.__init__(self, name, path, device, precision, num_threads, export_model=export_model)
        self.seq_frames = self.static_dim("x", 1, 80)
        self.motion_dim = self.static_dim("x", 2, 265)
        self.cond_dim = self.static_dim("cond", 2, 1103)
        self.baked_guidance_weight = float(self.metadata.get("guidance_weight", 2.0))
        self.file_label = str(self.path)


def lmdm_pair_paths(onnx_dir: str | Path) -> tuple[Path, Path] | None:
    """(memory, step) files of the cached LMDM pair in ``onnx_dir``; None when neither is there.

    Only one of the two is a CheckpointError: a folder half-way through an export is not silently skipped.
    """
    onnx_dir = Path(onnx_dir)
    memory, step = (onnx_dir / LMDM_PAIR_IO[graph].onnx_file for graph in ("lmdm_memory", "lmdm_step"))
    if not memory.is_file() and not step.is_file():
        return None
    if not (memory.is_file() and step.is_file()):
        missing = step if memory.is_file() else memory
        raise CheckpointError(
            f"{missing} is missing (the cached LMDM pair needs both files); export the pair with: "
            f"{export_command(onnx_dir, ['lmdm'], lmdm_form='cached')}"
        )
    return memory, step


def open_lmdm_pair(
    memory_path: str | Path,
    step_path: str | Path,
    device: str = "cpu",
    precision: str = "fp32",
    num_threads: int = 0,
) -> CachedPairLmdm:
    """The cached LMDM pair on onnxruntime, as a :class:`~ditto_research.backends.lmdm_pair.CachedPairLmdm`.

    The condition memory stays where it was made between steps: in host memory on the CPU (fed to the step
    zero-copy), on the GPU with CUDA (IO binding: memory outputs and step inputs bound by device pointer).
    """
    from ditto_research.backends.lmdm_pair import CachedPairLmdm

    memory = OnnxNetwork(
        "lmdm_memory", memory_path, device, precision, num_threads, io=LMDM_PAIR_IO["lmdm_memory"]
    )
    step = OnnxNetwork("lmdm_step", step_path, device, precision, num_threads, io=LMDM_PAIR_IO["lmdm_step"])

    import torch

    def run(graph: OnnxNetwork) -> Callable[..., list[Any]]:
        return lambda *inputs: [torch.from_numpy(out) for out in graph.run_numpy(*inputs)]

    def bound(graph: OnnxNetwork) -> Callable[..., list[Any]]:
        """IO binding on the GPU: outputs allocated on the device, every input bound by pointer."""
        kind, index = check_onnx_device(device)
        target = torch.device(kind, index) if kind == "cuda" else torch.device("cpu")

        def call(*inputs: Any) -> list[Any]:
            batch = int(torch.as_tensor(inputs[0]).shape[0])
            outputs = [torch.empty(shape, device=target) for shape in graph.output_shapes(batch)]
            return graph.run_bound(inputs, outputs)

        return call

    wrap = bound if device.startswith("cuda") else run

    return CachedPairLmdm(
        wrap(memory),
        wrap(step),
        seq_frames=step.static_dim("x", 1, 80),
        motion_dim=step.static_dim("x", 2, 265),
        cond_dim=memory.static_dim("cond", 2, 1103),
        guidance_weight=float(step.metadata.get("guidance_weight", 2.0)),
        label=f"the cached LMDM pair {memory.path.name} + {step.path.name} in {step.path.parent}",
        device=f"cuda:{check_onnx_device(device)[1]}" if device.startswith("cuda") else "cpu",
        metadata=step.metadata,
    )


def load_onnx_network(
    name: str,
    onnx_dir: str | Path,
    device: str = "cpu",
    precision: str = "fp32",
    num_threads: int = 0,
    export_model: str = "ditto",
) -> OnnxNetwork | CachedPairLmdm:
    """Open ``<onnx_dir>/<official file name>`` for network ``name``; the LMDM as its cached pair when
    present (``export_model``: the ``model=`` an error's export command names)."""
    onnx_dir = Path(onnx_dir)
    if name == "lmdm":
        pair = lmdm_pair_paths(onnx_dir)
        if pair is not None:
            return open_lmdm_pair(*pair, device=device, precision=precision, num_threads=num_threads)
    runner_class: Callable[..., OnnxNetwork] = OnnxLmdm if name == "lmdm" else OnnxNetwork
    return runner_class(
        name, onnx_dir / get_io(name).onnx_file, device, precision, num_threads, export_model=export_model
    )
