"""Runtime backends: the same six networks on PyTorch, ONNX Runtime or TensorRT, picked by config.

    backend = make_backend("onnx", device="cpu", onnx_dir="exports/ditto_onnx")
    warp = backend.load("warp_network")
    out = warp(feature_3d, kp_source, kp_driving)            # official ONNX input order, torch or numpy

Every backend's runners follow :mod:`ditto_research.backends.base` (names, order, array kinds); the LMDM
runner also offers ``guided_denoiser`` / ``alphas_cumprod`` for the samplers. Heavy imports (onnxruntime,
tensorrt) happen inside the chosen backend only. An unavailable backend, device or provider is a ConfigError,
never a silent fallback; missing or mismatched files are CheckpointErrors that name the export command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from ditto_research.backends.base import (
    BACKEND_NAMES,
    FP32_NETWORKS,
    NETWORK_IO,
    RENDER_NETWORKS,
    NetworkIO,
    NetworkRunner,
    TensorSpec,
    check_precision,
    example_inputs,
    get_io,
)
from ditto_research.choices import check_choice
from ditto_research.errors import CheckpointError, ConfigError

__all__ = [
    "BACKEND_NAMES",
    "FP32_NETWORKS",
    "NETWORK_IO",
    "RENDER_NETWORKS",
    "Backend",
    "NetworkIO",
    "NetworkRunner",
    "TensorSpec",
    "example_inputs",
    "get_io",
    "make_backend",
    "make_backend_from_config",
]


class Backend:
    """Hands out runners of one backend; each network is built on first use and then kept."""

    def __init__(
        self, name: str, device: str, precision: str, loader: Callable[[str], NetworkRunner], source: str
    ) -> None:
        self.name = name
        self.device = device
        self.precision = precision
        self.source = source  # where the weights come from, for logs
        self._loader = loader
        self._runners: dict[str, NetworkRunner] = {}

    def load(self, network: str) -> NetworkRunner:
        get_io(network)  # unknown names: ConfigError listing the valid ones
        if network not in self._runners:
            self._runners[network] = self._loader(network)
        return self._runners[network]

    def load_all(self, networks: Iterable[str] = RENDER_NETWORKS) -> dict[str, NetworkRunner]:
        return {name: self.load(name) for name in networks}

    def __repr__(self) -> str:
        return f"Backend({self.name}, device={self.device}, precision={self.precision}, {self.source})"


def make_backend(
    name: str,
    device: str = "cpu",
    precision: str = "fp32",
    onnx_dir: str | Path | None = None,
    engine_dir: str | Path | None = None,
    checkpoint_root: str | Path = "checkpoints",
    model_name: str = "ditto",
    seed: int = 0,
    tiny: bool | None = None,
    *,
    num_threads: int = 0,
    lmdm_file: str = "lmdm_v0.4_hubert.pth",
    cond_dim: int | None = None,
    seq_frames: int = 80,
    lmdm_order: str = "fast",
    lmdm_precision: str = "fp32",
    lmdm_path: str | Path | None = None,
) -> Backend:
    """Build backend ``name`` (pytorch | onnx | tensorrt); device and precision are checked here, files on
    load.

    Args:
        onnx_dir: ONNX folder laid out like ditto_onnx/ (None: <checkpoint_root>/ditto_onnx).
        engine_dir: TensorRT engine folder (None: <checkpoint_root>/ditto_trt_<gpu>).
        model_name, seed, tiny: pytorch only: ditto = official checkpoints under ``checkpoint_root``;
            untrained / tiny = random weights, network i seeded ``seed + i`` (tiny defaults to model_name ==
            "tiny").
        num_threads: onnxruntime intra-op threads (0: onnxruntime's default).
        cond_dim, seq_frames: the LMDM condition width / window the configured flags give (checked against a
            checkpoint; used to size a random LMDM).
        lmdm_order: pytorch only: "fast", or "reference" (the original's operation order, bit-identical).
        lmdm_path: pytorch only: an LMDM file (official layout) used instead of the model set's LMDM.
    """
    check_choice("backend", name, BACKEND_NAMES)
    check_precision(name, precision)
    if lmdm_path is not None and name != "pytorch":
        raise ConfigError(
            f"model.lmdm_path needs backend=pytorch (backend={name} runs exported graphs: export the trained "
            "LMDM with python -m ditto_research.export.onnx model.lmdm_path=... first)"
        )
    if lmdm_order != "fast" and name != "pytorch":
        raise ConfigError(
            f"backend.lmdm_order={lmdm_order} needs backend=pytorch (an exported LMDM graph has its own "
            "operation order); use backend=pytorch or backend.lmdm_order=fast"
        )
    root = Path(checkpoint_root)
    if name == "pytorch":
        return _torch_backend(
            device,
            precision,
            root,
            model_name,
            seed,
            model_name == "tiny" if tiny is None else tiny,
            lmdm_file,
            cond_dim,
            seq_frames,
            lmdm_order,
            lmdm_precision,
            Path(lmdm_path).expanduser() if lmdm_path else None,
        )
    if name == "onnx":
        return _onnx_backend(
            device, precision, Path(onnx_dir) if onnx_dir else root / "ditto_onnx", num_threads, model_name
        )
    return _tensorrt_backend(device, precision, engine_dir, root, onnx_dir)


def make_backend_from_config(backend: object, model: object, motion: object | None = None) -> Backend:
    """:func:`make_backend` from the typed ``BackendConfig``, ``ModelConfig`` and (optional)
    ``MotionConfig``."""
    return make_backend(
        backend.name,  # type: ignore[attr-defined]
        device=backend.device,  # type: ignore[attr-defined]
        precision=backend.precision,  # type: ignore[attr-defined]
        onnx_dir=backend.onnx_dir,  # type: ignore[attr-defined]
        engine_dir=backend.engine_dir,  # type: ignore[attr-defined]
        checkpoint_root=model.checkpoint_root,  # type: ignore[attr-defined]
        model_name=model.name,  # type: ignore[attr-defined]
        seed=model.seed,  # type: ignore[attr-defined]
        num_threads=backend.num_threads,  # type: ignore[attr-defined]
        lmdm_file=model.lmdm_file,  # type: ignore[attr-defined]
        cond_dim=motion.cond_dim if motion is not None else None,  # type: ignore[attr-defined]
        seq_frames=motion.seq_frames if motion is not None else 80,  # type: ignore[attr-defined]
        lmdm_order=getattr(backend, "lmdm_order", "fast"),
        lmdm_precision=getattr(backend, "lmdm_precision", "fp32"),
        lmdm_path=getattr(model, "lmdm_path", None),
    )


def _torch_backend(
    device: str,
    precision: str,
    root: Path,
    model_name: str,
    seed: int,
    tiny: bool,
    lmdm_file: str,
    cond_dim: int | None,
    seq_frames: int,
    lmdm_order: str = "fast",
    lmdm_precision: str = "fp32",
    lmdm_path: Path | None = None,
) -> Backend:
    from ditto_research.backends.pytorch import load_torch_network, resolve_torch_device
    from ditto_research.checkpoints import CheckpointRoot
    from ditto_research.models import NETWORK_NAMES

    resolve_torch_device(device)  # fail now, not at the first network

    def load(network: str) -> NetworkRunner:
        if network not in NETWORK_NAMES:
            raise ConfigError(
                f"backend=pytorch has no {network} network (speech features come from audio_encoder)"
            )
        if network == "lmdm" and lmdm_path is not None:  # trained weights on the set's architecture
            return load_torch_network(
                network,
                device,
                precision,
                lmdm_path,
                tiny=tiny and model_name != "ditto",
                expected_cond_dim=cond_dim,
                lmdm_order=lmdm_order,  # type: ignore[arg-type]
                lmdm_precision=lmdm_precision,
            )
        if model_name == "ditto":
            path = CheckpointRoot(root).model_path(network, lmdm_file if network == "lmdm" else None)
            return load_torch_network(
                network,
                device,
                precision,
                path,
                expected_cond_dim=cond_dim if network == "lmdm" else None,
                lmdm_order=lmdm_order,  # type: ignore[arg-type]
                lmdm_precision=lmdm_precision,
            )
        extra = {"cond_dim": cond_dim or 1103, "seq_frames": seq_frames} if network == "lmdm" else {}
        return load_torch_network(
            network,
            device,
            precision,
            None,
            seed=seed + NETWORK_NAMES.index(network),
            tiny=tiny,
            lmdm_order=lmdm_order,  # type: ignore[arg-type]
            lmdm_precision=lmdm_precision,
            **extra,
        )

    source = f"checkpoints in {root}" if model_name == "ditto" else f"{model_name} weights, seed {seed}"
    return Backend("pytorch", device, precision, load, source)


def _onnx_backend(device: str, precision: str, onnx_dir: Path, num_threads: int, model_name: str) -> Backend:
    from ditto_research.backends.onnx import check_onnx_device, export_command, load_onnx_network

    check_onnx_device(device)
    if not onnx_dir.is_dir():
        raise CheckpointError(
            f"ONNX folder {onnx_dir} does not exist; write it with: "
            f"{export_command(onnx_dir, model=model_name)} (or set backend.onnx_dir=DIR)"
        )

    def load(network: str) -> NetworkRunner:
        return load_onnx_network(network, onnx_dir, device, precision, num_threads, export_model=model_name)

    return Backend("onnx", device, precision, load, f"ONNX files in {onnx_dir}")


def _tensorrt_backend(
    device: str, precision: str, engine_dir: str | Path | None, root: Path, onnx_dir: str | Path | None
) -> Backend:
    import torch

    from ditto_research.backends.tensorrt import (
        current_gpu_name,
        gpu_slug,
        import_tensorrt,
        load_tensorrt_network,
    )

    import_tensorrt()
    if not device.startswith("cuda"):
        raise ConfigError(f"backend=tensorrt runs on CUDA only; set backend.device=cuda (got {device})")
    folder = (
        Path(engine_dir)
        if engine_dir
        else root / f"ditto_trt_{gpu_slug(current_gpu_name(torch.device(device)))}"
    )

    def load(network: str) -> NetworkRunner:
        return load_tensorrt_network(network, folder, device, precision, onnx_dir)

    return Backend("tensorrt", device, precision, load, f"engines in {folder}")
