"""PyTorch backend: the eager modules of :mod:`ditto_research.models` behind the runner protocol.

Reduced precision follows the original's PyTorch path: ``torch.autocast`` around the renderer networks (so
grid sampling, norms and softmax stay in float32 where autocast keeps them), while the networks in
:data:`FP32_NETWORKS` (the LMDM among them) always run in float32. Outputs are returned in float32.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ditto_research.backends.base import (
    FP32_NETWORKS,
    Array,
    NetworkIO,
    bare_or_tuple,
    check_precision,
    get_io,
)
from ditto_research.choices import LMDM_ORDERS, LmdmOrder, check_choice
from ditto_research.errors import ConfigError, InputError

__all__ = [
    "LMDM_ORDERS",
    "LmdmOrder",
    "TorchLmdm",
    "TorchNetwork",
    "load_torch_network",
    "resolve_torch_device",
]

_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_torch_device(device: str) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N`` -> torch.device; a missing CUDA device is a ConfigError, never a
    fallback."""
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(
            f"backend.device={device!r} is not a device; choose one of: cpu, cuda, cuda:N"
        ) from e
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"backend.device={device} but this torch ({torch.__version__}) sees no CUDA device; "
            "use backend.device=cpu or install a CUDA build of torch"
        )
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"backend.device={device!r} is not supported; choose one of: cpu, cuda")
    return resolved


class TorchNetwork:
    """``runner(*inputs)`` around an eval-mode module; see :mod:`ditto_research.backends.base` for the I/O
    rules."""

    def __init__(
        self, name: str, module: nn.Module, device: str | torch.device = "cpu", precision: str = "fp32"
    ) -> None:
        check_precision("pytorch", precision)
        self.name = name
        self.io: NetworkIO = get_io(name)
        self.module = module.eval()
        self.device = torch.device(device)
        self.precision = "fp32" if name in FP32_NETWORKS else precision
        self._autocast_dtype = _AUTOCAST_DTYPES.get(self.precision)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast_dtype)

    def _tensor(self, value: Array, dtype: str) -> torch.Tensor:
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(value)
        return tensor.to(device=self.device, dtype=getattr(torch, dtype))

    def __call__(self, *inputs: Array) -> Any:
        if len(inputs) != len(self.io.inputs):
            raise InputError(
                f"{self.name} takes {len(self.io.inputs)} inputs {list(self.io.input_names)}, "
                f"got {len(inputs)}"
            )
        tensors = [self._tensor(value, spec.dtype) for value, spec in zip(inputs, self.io.inputs)]
        with torch.no_grad(), self._autocast():
            result = self.module(*tensors)
        outputs = list(result) if isinstance(result, tuple) else [result]
        outputs = [out.float() if out.is_floating_point() else out for out in outputs]
        like = inputs[0]
        if isinstance(like, torch.Tensor):
            return bare_or_tuple([out.to(like.device) for out in outputs])
        return bare_or_tuple([out.cpu().numpy() for out in outputs])


class TorchLmdm(TorchNetwork):
    """The LMDM runner; the sampler interface goes straight to the module (condition encoded once per
    window). ``order="reference"`` computes each guided x_0 in the original's operation order instead
    (:mod:`ditto_research.models.lmdm_reference`: bit-identical to the original, slower)."""

    def __init__(
        self,
        name: str,
        module: nn.Module,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        order: LmdmOrder = "fast",
        lmdm_precision: str = "fp32",
    ) -> None:
        """``order``: "fast" or "reference"; ``lmdm_precision``: the LMDM's own autocast (``precision`` is
        the renderer's and leaves the LMDM in fp32, as the original)."""
        super().__init__(name, module, device, precision)
        check_choice("backend.lmdm_order", order, LMDM_ORDERS)
        check_precision("pytorch", lmdm_precision, "backend.lmdm_precision")
        self.order = order
        self.precision = lmdm_precision
        self._autocast_dtype = _AUTOCAST_DTYPES.get(lmdm_precision)

    @property
    def seq_frames(self) -> int:
        return int(self.module.seq_frames)

    @property
    def motion_dim(self) -> int:
        return int(self.module.motion_dim)

    @property
    def cond_dim(self) -> int:
        return int(self.module.cond_dim)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.module.alphas_cumprod

    @property
    def guidance_weight(self) -> float:
        return float(self.module.guidance_weight)

    @guidance_weight.setter
    def guidance_weight(self, value: float) -> None:
        self.module.guidance_weight = float(value)

    def guided_denoiser(
        self,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        guidance_scale: float | None = None,
        times: torch.Tensor | None = None,
    ) -> Any:
        """The module's ``guided_denoiser`` (condition encoded once per window), under no_grad; with
        ``order="reference"`` the original's operation order (``times`` unused: nothing is precomputed)."""
        cond_frame, cond = cond_frame.to(self.device), cond.to(self.device)
        with torch.no_grad(), self._autocast():
            if self.order == "reference":
                from ditto_research.models.lmdm_reference import reference_guided_denoiser

                inner = reference_guided_denoiser(self.module, cond_frame, cond, guidance_scale)
            else:
                inner = self.module.guided_denoiser(cond_frame, cond, guidance_scale, times=times)

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            with torch.no_grad(), self._autocast():
                return inner(x.to(self.device), t).float()

        return denoise

    def predict_noise_from_start(
        self, x: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor
    ) -> torch.Tensor:
        return self.module.predict_noise_from_start(x, t, x_start)


def load_torch_network(
    name: str,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    checkpoint: str | Path | None = None,
    *,
    seed: int = 0,
    tiny: bool = False,
    expected_cond_dim: int | None = None,
    lmdm_order: LmdmOrder = "fast",
    lmdm_precision: str = "fp32",
    **kwargs: Any,
) -> TorchNetwork:
    """Build network ``name`` (official checkpoint or seeded random weights) and wrap it (``lmdm_order``:
    the LMDM's operation order, see :class:`TorchLmdm`)."""
    from ditto_research.models import load_network

    resolved = resolve_torch_device(str(device))
    module = load_network(
        name, checkpoint, resolved, seed=seed, tiny=tiny, expected_cond_dim=expected_cond_dim, **kwargs
    )
    if name != "lmdm":
        return TorchNetwork(name, module, resolved, precision)
    return TorchLmdm(name, module, resolved, precision, lmdm_order, lmdm_precision)
