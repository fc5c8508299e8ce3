"""TensorRT backend (TensorRT >= 10 Python API): runs engines built by
``python -m ditto_research.export.tensorrt``.

An engine only runs on the GPU model and TensorRT version that built it, so engine files carry both in their
name (:func:`engine_file_name`), e.g. ``decoder_fp16.NVIDIA-H100-80GB-HBM3.trt10.7.0.engine``. Loading checks
the tag against this machine first and says what to rebuild instead of letting deserialisation crash; the
official TensorRT 8.6 engines (``decoder_fp16.engine``, built with a custom plugin) carry no tag and are
refused with the same remedy.

The LMDM loads as its cached pair (engines built from ``lmdm_v0.4_hubert_memory.onnx`` / ``_step.onnx``, see
:mod:`ditto_research.backends.lmdm_pair`) when both engines are in the folder, else as the official guided
step.

``tensorrt`` is imported only when an engine is loaded; buffers are torch CUDA tensors and the engine runs on
torch's current stream, so no other CUDA binding is needed. Unverified on the CPU-only development machines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ditto_research.backends.base import (
    FP32_NETWORKS,
    LMDM_PAIR_IO,
    Array,
    LmdmSampling,
    NetworkIO,
    bare_or_tuple,
    check_precision,
    get_graph_io,
)
from ditto_research.errors import CheckpointError, ConfigError, InputError

__all__ = [
    "EngineTag",
    "TensorRTLmdm",
    "TensorRTNetwork",
    "build_command",
    "check_engine_tag",
    "current_gpu_name",
    "engine_file_name",
    "find_engine",
    "find_lmdm_pair_engines",
    "gpu_slug",
    "import_tensorrt",
    "load_tensorrt_network",
    "open_lmdm_pair_engines",
    "parse_engine_file_name",
    "read_sidecar",
    "sidecar_path",
]

_ENGINE_NAME = re.compile(
    r"^(?P<stem>.+)_(?P<precision>fp16|fp32)\.(?P<gpu>[A-Za-z0-9-]+)\.trt(?P<version>\d+(?:\.\d+)*)\.engine$"
)


@dataclass(frozen=True)
class EngineTag:
    """What an engine file name says about it."""

    stem: str
    precision: str
    gpu: str
    trt_version: str


def gpu_slug(name: str) -> str:
    """A GPU name as a file-name token: ``"NVIDIA H100 80GB HBM3"`` -> ``"NVIDIA-H100-80GB-HBM3"``."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
    return slug or "unknown-GPU"


def engine_file_name(stem: str, precision: str, gpu: str, trt_version: str) -> str:
    """``<stem>_<precision>.<gpu slug>.trt<version>.engine``."""
    return f"{stem}_{precision}.{gpu_slug(gpu)}.trt{trt_version}.engine"


def parse_engine_file_name(name: str) -> EngineTag | None:
    """The tag of an engine file name, or None when it carries none (e.g. the official engines)."""
    match = _ENGINE_NAME.match(name)
    if match is None:
        return None
    return EngineTag(match["stem"], match["precision"], match["gpu"], match["version"])


def build_command(onnx_dir: str | Path | None, engine_dir: str | Path) -> str:
    source = f" onnx_dir={onnx_dir}" if onnx_dir else ""
    return f"python -m ditto_research.export.tensorrt{source} engine_dir={engine_dir}"


def check_engine_tag(path: Path, gpu: str, trt_version: str, onnx_dir: str | Path | None = None) -> EngineTag:
    """The tag of ``path`` if it was built for this GPU and TensorRT version, else a CheckpointError saying
    why."""
    remedy = f"rebuild the engines on this machine with: {build_command(onnx_dir, path.parent)}"
    tag = parse_engine_file_name(path.name)
    if tag is None:
        raise CheckpointError(
            f"engine {path} has no GPU/TensorRT tag in its name (the official TensorRT 8.6 engines and their "
            f"grid-sample plugin cannot be loaded by TensorRT >= 10); {remedy}"
        )
    if tag.gpu != gpu_slug(gpu) or tag.trt_version != trt_version:
        raise CheckpointError(
            f"engine {path} was built for {tag.gpu} with TensorRT {tag.trt_version}, but this machine has "
            f"{gpu_slug(gpu)} with TensorRT {trt_version}; engines do not move between GPU models or "
            f"TensorRT versions: {remedy}"
        )
    return tag


def find_engine(
    engine_dir: Path,
    name: str,
    precision: str,
    gpu: str,
    trt_version: str,
    onnx_dir: str | Path | None = None,
) -> Path:
    """The engine of network ``name`` for this GPU / TensorRT version in ``engine_dir``.

    Networks in :data:`FP32_NETWORKS` are looked up as fp32. Engines for other machines produce a
    CheckpointError naming what they were built for; so does a missing folder or engine.
    """
    stem = get_graph_io(name).stem
    wanted = "fp32" if name in FP32_NETWORKS else precision
    remedy = f"build them with: {build_command(onnx_dir, engine_dir)}"
    if not engine_dir.is_dir():
        raise CheckpointError(f"TensorRT engine folder {engine_dir} does not exist; {remedy}")
    exact = engine_dir / engine_file_name(stem, wanted, gpu, trt_version)
    if exact.is_file():
        return exact
    candidates = sorted(p for p in engine_dir.glob(f"{stem}_fp*.engine") if p.name.startswith(f"{stem}_fp"))
    for path in candidates:
        tag = parse_engine_file_name(path.name)
        if tag is None or tag.precision == wanted:
            check_engine_tag(path, gpu, trt_version, onnx_dir)  # raises: built elsewhere, or untagged
    found = ", ".join(p.name for p in candidates) or "none"
    raise CheckpointError(
        f"no {wanted} engine for {name} in {engine_dir} (expected {exact.name}; found: {found}); {remedy}"
    )


# ---------------------------------------------------------------------------------------------- runtime


def import_tensorrt(purpose: str = "backend=tensorrt") -> Any:
    """``import tensorrt`` (>= 10), or a ConfigError saying it is unavailable on this machine."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise ConfigError(
            f"{purpose} is unavailable on this machine: the 'tensorrt' Python package (>= 10) is not "
            "installed (pip install tensorrt-cu12, matching your CUDA); use backend=onnx or "
            "backend=pytorch instead"
        ) from e
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise ConfigError(f"{purpose} needs TensorRT >= 10, found {trt.__version__}; upgrade tensorrt")
    return trt


def current_gpu_name(device: torch.device) -> str:
    if not torch.cuda.is_available():
        raise ConfigError(
            "backend=tensorrt needs a CUDA GPU visible to torch (torch.cuda.is_available() is False); "
            "use backend=onnx or backend=pytorch with backend.device=cpu"
        )
    return torch.cuda.get_device_name(device)


_TORCH_DTYPES = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "INT8": torch.int8,
}


def _torch_dtype(dtype: Any, where: str) -> torch.dtype:
    name = getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    if name not in _TORCH_DTYPES:
        raise CheckpointError(f"{where} has a tensor of type {name}, which this backend cannot feed")
    return _TORCH_DTYPES[name]


def sidecar_path(engine_path: Path) -> Path:
    """``<engine>.json``: the ``ditto.*`` metadata of the ONNX file an engine was built from."""
    return engine_path.with_name(engine_path.name + ".json")


def read_sidecar(engine_path: Path) -> dict[str, str]:
    import json

    path = sidecar_path(engine_path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); rebuild the engine") from e
    return {str(k): str(v) for k, v in dict(data.get("metadata", {})).items()}


class TensorRTNetwork:
    """One engine; ``runner(*inputs)`` as described in :mod:`ditto_research.backends.base`."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        device: str = "cuda",
        onnx_dir: str | Path | None = None,
        io: NetworkIO | None = None,
    ) -> None:
        """``io``: the interface the engine must have (default: network or LMDM-pair graph ``name``'s)."""
        self.trt = import_tensorrt()
        self.name = name
        self.io: NetworkIO = io or get_graph_io(name)
        self.path = Path(path)
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ConfigError(f"backend=tensorrt runs on CUDA only; set backend.device=cuda (got {device})")
        self.tag = check_engine_tag(self.path, current_gpu_name(self.device), self.trt.__version__, onnx_dir)
        logger = self.trt.Logger(self.trt.Logger.ERROR)
        with torch.cuda.device(self.device):
            self.engine = self.trt.Runtime(logger).deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise CheckpointError(
                    f"TensorRT could not deserialize {self.path} (corrupt file?); rebuild it with: "
                    f"{build_command(onnx_dir, self.path.parent)}"
                )
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT for n in names}
        self._inputs = [n for n in names if is_input[n]]
        self._outputs = [n for n in names if not is_input[n]]
        ranks = {n: len(self.engine.get_tensor_shape(n)) for n in names}
        problem = self.io.mismatch(
            [(n, ranks[n]) for n in self._inputs], [(n, ranks[n]) for n in self._outputs]
        )
        if problem:
            raise CheckpointError(f"engine {self.path} does not have the {name} interface: {problem}")
        self._dtypes = {n: _torch_dtype(self.engine.get_tensor_dtype(n), str(self.path)) for n in names}
        self.metadata = read_sidecar(self.path)

    def run_torch(self, *inputs: Array) -> list[torch.Tensor]:
        if len(inputs) != len(self._inputs):
            raise InputError(
                f"{self.name} takes {len(self._inputs)} inputs {self._inputs}, got {len(inputs)}"
            )
        feeds = []
        for name, value in zip(self._inputs, inputs):
            tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
            tensor = tensor.to(device=self.device, dtype=self._dtypes[name]).contiguous()
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise InputError(
                    f"{self.path.name}: input {name} of shape {tuple(tensor.shape)} is outside the "
                    "engine's optimisation profile; rebuild with a wider profile "
                    "(ditto_research.export.tensorrt max_batch)"
                )
            self.context.set_tensor_address(name, tensor.data_ptr())
            feeds.append(tensor)  # keep alive until the stream is done
        outputs = []
        for name in self._outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise InputError(
                f"TensorRT failed to run {self.path.name} on inputs {[tuple(f.shape) for f in feeds]}"
            )
        stream.synchronize()
        return [out.float() if out.is_floating_point() else out for out in outputs]

    def __call__(self, *inputs: Array) -> Any:
        outputs = self.run_torch(*inputs)
        like = inputs[0]
        if isinstance(like, torch.Tensor):
            return bare_or_tuple([out.to(like.device) for out in outputs])
        return bare_or_tuple([out.cpu().numpy() for out in outputs])


class TensorRTLmdm(LmdmSampling, TensorRTNetwork):
    """The guided LMDM engine with the DDIM sampler interface of :class:`LmdmSampling`."""

    def __init__(
        self, name: str, path: str | Path, device: str = "cuda", onnx_dir: str | Path | None = None
    ) -> None:
        TensorRTNetwork.__init__(self, name, path, device, onnx_dir)
        x_shape = list(self.engine.get_tensor_shape("x"))
        cond_shape = list(self.engine.get_tensor_shape("cond"))
        self.seq_frames = int(x_shape[1]) if x_shape[1] > 0 else 80
        self.motion_dim = int(x_shape[2]) if x_shape[2] > 0 else 265
        self.cond_dim = int(cond_shape[2]) if cond_shape[2] > 0 else 1103
        self.baked_guidance_weight = float(self.metadata.get("guidance_weight", 2.0))  # official file: 2
        self.file_label = str(self.path)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return super().alphas_cumprod.to(self.device)


def find_lmdm_pair_engines(
    engine_dir: Path, gpu: str, trt_version: str, onnx_dir: str | Path | None = None
) -> tuple[Path, Path] | None:
    """(memory, step) engines of the cached LMDM pair for this GPU / TensorRT; None when neither is there."""
    paths = [
        engine_dir / engine_file_name(LMDM_PAIR_IO[g].stem, "fp32", gpu, trt_version) for g in LMDM_PAIR_IO
    ]
    present = [p.is_file() for p in paths]
    if not any(present):
        return None
    if not all(present):
        missing = paths[present.index(False)]
        raise CheckpointError(
            f"engine {missing} is missing (the cached LMDM pair needs both engines); build them with: "
            f"{build_command(onnx_dir, engine_dir)}"
        )
    return paths[0], paths[1]


def open_lmdm_pair_engines(
    memory_path: Path, step_path: Path, device: str = "cuda", onnx_dir: str | Path | None = None
) -> Any:
    """The cached LMDM pair on TensorRT (a :class:`~ditto_research.backends.lmdm_pair.CachedPairLmdm`).

    The condition memory stays on the GPU between steps.
    """
    from ditto_research.backends.lmdm_pair import CachedPairLmdm

    memory = TensorRTNetwork("lmdm_memory", memory_path, device, onnx_dir)
    step = TensorRTNetwork("lmdm_step", step_path, device, onnx_dir)

    def dim(network: TensorRTNetwork, tensor: str, axis: int, default: int) -> int:
        value = int(list(network.engine.get_tensor_shape(tensor))[axis])
        return value if value > 0 else default

    return CachedPairLmdm(
        memory.run_torch,
        step.run_torch,
        seq_frames=dim(step, "x", 1, 80),
        motion_dim=dim(step, "x", 2, 265),
        cond_dim=dim(memory, "cond", 2, 1103),
        guidance_weight=float(step.metadata.get("guidance_weight", 2.0)),
        label=f"the cached LMDM engines {memory_path.name} + {step_path.name}",
        device=device,
        metadata=step.metadata,
    )


def load_tensorrt_network(
    name: str,
    engine_dir: str | Path,
    device: str = "cuda",
    precision: str = "fp16",
    onnx_dir: str | Path | None = None,
) -> Any:
    """Find and open the engine of network ``name`` built for this GPU and TensorRT version.

    The LMDM opens as its cached pair when both pair engines are there (:func:`find_lmdm_pair_engines`).
    """
    check_precision("tensorrt", precision)
    trt = import_tensorrt()
    resolved = torch.device(device)
    gpu = current_gpu_name(resolved)
    if name == "lmdm":
        pair = find_lmdm_pair_engines(Path(engine_dir), gpu, trt.__version__, onnx_dir)
        if pair is not None:
            return open_lmdm_pair_engines(*pair, device=device, onnx_dir=onnx_dir)
    path = find_engine(Path(engine_dir), name, precision, gpu, trt.__version__, onnx_dir)
    runner_class = TensorRTLmdm if name == "lmdm" else TensorRTNetwork
    return runner_class(name, path, device, onnx_dir)
