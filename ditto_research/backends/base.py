"""The network protocol every backend implements, and the official ONNX interface it is written against.

A backend hands out one callable per network. Inputs and outputs are in the official ONNX order (the names
below are those of ``ditto_onnx/*.onnx`` and of the tensors the original TensorRT code reads):

    appearance_extractor(image)                         -> pred (the 3-D appearance feature f_s)
    motion_extractor(image)                             -> pitch, yaw, roll, t, exp, scale, kp
    warp_network(feature_3d, kp_source, kp_driving)     -> out
    decoder(feature)                                    -> output
    stitch_network(kp_source, kp_driving)               -> out
    lmdm(x, cond_frame, cond, time_cond)                -> pred_noise, x_start   (guided, weight baked in)
    hubert(input_values)                                -> encoding_out          (ONNX / TensorRT only)

The LMDM can also be exported as a pair of graphs with the sampler speedups baked in
(:data:`LMDM_PAIR_IO`, :mod:`ditto_research.backends.lmdm_pair`); its runner keeps the ``lmdm`` interface.

Calls accept torch tensors or numpy arrays; the result has the kind of the first input (torch tensors on the
first input's device, numpy arrays otherwise). A single output is returned bare, several as a tuple, the way
the torch modules return them, so the pipeline can swap a module for a runner without other changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ditto_research.choices import BACKEND_NAMES, check_precision
from ditto_research.errors import ConfigError

__all__ = [
    "BACKEND_NAMES",
    "FP32_NETWORKS",
    "LMDM_PAIR_IO",
    "NETWORK_IO",
    "RENDER_NETWORKS",
    "Array",
    "LmdmSampling",
    "NetworkIO",
    "NetworkRunner",
    "TensorSpec",
    "check_precision",
    "example_inputs",
    "from_numpy_like",
    "get_graph_io",
    "get_io",
    "to_numpy",
]

Array = torch.Tensor | np.ndarray
RENDER_NETWORKS = (
    "appearance_extractor",
    "motion_extractor",
    "warp_network",
    "decoder",
    "stitch_network",
    "lmdm",
)
# Kept in float32 whatever the requested precision (as the original's TensorRT build does for the motion
# extractor, HuBERT and the LMDM; the stitching MLP is tiny and feeds geometry, so fp16 buys nothing).
# The LMDM's cached pair (lmdm_memory, lmdm_step) is the LMDM too.
FP32_NETWORKS = frozenset(
    {"motion_extractor", "stitch_network", "lmdm", "hubert", "lmdm_memory", "lmdm_step"}
)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its official name, accepted ranks, dtype, and names seen in other exports.

    ``batched``: axis 0 is the batch (made dynamic by ``dynamic_batch`` exports); False for a shared value.
    """

    name: str
    ranks: tuple[int, ...]
    dtype: str = "float32"
    aliases: tuple[str, ...] = ()
    batched: bool = True

    def matches(self, name: str, rank: int | None) -> bool:
        return name in (self.name, *self.aliases) and (rank is None or rank in self.ranks)

    def describe(self) -> str:
        ranks = "/".join(str(r) for r in self.ranks)
        return f"{self.name} ({ranks}-D {self.dtype})"


@dataclass(frozen=True)
class NetworkIO:
    """The official interface of one network."""

    name: str
    stem: str  # file stem in ditto_onnx/ and of the engines
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def onnx_file(self) -> str:
        return f"{self.stem}.onnx"

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)

    def describe(self) -> str:
        ins = ", ".join(spec.describe() for spec in self.inputs)
        outs = ", ".join(spec.describe() for spec in self.outputs)
        return f"inputs [{ins}] -> outputs [{outs}]"

    def mismatch(
        self, inputs: Sequence[tuple[str, int | None]], outputs: Sequence[tuple[str, int | None]]
    ) -> str | None:
        """None when (name, rank) lists fit this interface, else a one-line description of the difference."""
        problems = []
        for kind, specs, found in (("inputs", self.inputs, inputs), ("outputs", self.outputs, outputs)):
            if len(found) != len(specs) or not all(s.matches(n, r) for s, (n, r) in zip(specs, found)):
                have = ", ".join(f"{n} ({'?' if r is None else r}-D)" for n, r in found) or "none"
                problems.append(f"{kind} are [{have}]")
        if not problems:
            return None
        return "; ".join(problems) + f"; expected {self.describe()}"


def _f(name: str, *ranks: int, aliases: tuple[str, ...] = ()) -> TensorSpec:
    return TensorSpec(name, tuple(ranks), "float32", aliases)


NETWORK_IO: dict[str, NetworkIO] = {
    io.name: io
    for io in (
        NetworkIO(
            "appearance_extractor",
            "appearance_extractor",
            (_f("image", 4),),
            (_f("pred", 5, aliases=("feature_3d",)),),
        ),
        NetworkIO(
            "motion_extractor",
            "motion_extractor",
            (_f("image", 4),),
            tuple(_f(n, 2) for n in ("pitch", "yaw", "roll", "t"))
            + (_f("exp", 2, 3), _f("scale", 2), _f("kp", 2, 3)),
        ),
        NetworkIO(
            "warp_network",
            "warp_network",
            (_f("feature_3d", 5), _f("kp_source", 3), _f("kp_driving", 3)),
            (_f("out", 4),),
        ),
        NetworkIO("decoder", "decoder", (_f("feature", 4),), (_f("output", 4),)),
        NetworkIO(
            "stitch_network", "stitch_network", (_f("kp_source", 3), _f("kp_driving", 3)), (_f("out", 3),)
        ),
        NetworkIO(
            "lmdm",
            "lmdm_v0.4_hubert",
            (_f("x", 3), _f("cond_frame", 2), _f("cond", 3), TensorSpec("time_cond", (1,), "int64")),
            (_f("pred_noise", 3), _f("x_start", 3)),
        ),
        NetworkIO("hubert", "hubert", (_f("input_values", 2),), (_f("encoding_out", 2, 3),)),
    )
}


# The LMDM as two graphs (python -m ditto_research.export.onnx lmdm_form=cached): the condition memory of one
# window, computed once per window, and the guided step over it, run once per sampler step. Shapes: B batch, N
# frames (80), F motion (265), C condition (1103), L decoder layers (8), H heads (8), D/H head width (64); the
# 2 is the guidance branches [unconditional, conditional]. Written next to lmdm_v0.4_hubert.onnx.
LMDM_PAIR_IO: dict[str, NetworkIO] = {
    io.name: io
    for io in (
        NetworkIO(
            "lmdm_memory",
            f"{NETWORK_IO['lmdm'].stem}_memory",
            (_f("cond", 3),),  # (B, N, C)
            (
                _f("cond_hidden", 3),
                _f("cond_keys", 6),
                _f("cond_values", 6),
            ),  # (B, 2, D), (B, L, 2, H, N, D/H) x2
        ),
        NetworkIO(
            "lmdm_step",
            f"{NETWORK_IO['lmdm'].stem}_step",
            (
                _f("x", 3),  # (B, N, F)
                TensorSpec("t", (1,), "float32", batched=False),  # (1,): the step's time, any float
                _f("cond_frame", 2),  # (B, F)
                _f("cond_hidden", 3),
                _f("cond_keys", 6),
                _f("cond_values", 6),
                TensorSpec("guidance_weight", (1,), "float32", batched=False),  # (1,)
            ),
            (_f("x_start", 3),),  # (B, N, F): the guided x_0
        ),
    )
}


def get_io(name: str) -> NetworkIO:
    if name not in NETWORK_IO:
        raise ConfigError(f"unknown network {name!r}; choose one of: {', '.join(NETWORK_IO)}")
    return NETWORK_IO[name]


def get_graph_io(name: str) -> NetworkIO:
    """The interface of a network (:data:`NETWORK_IO`) or of one graph of the LMDM pair
    (:data:`LMDM_PAIR_IO`)."""
    if name in LMDM_PAIR_IO:
        return LMDM_PAIR_IO[name]
    return get_io(name)


# ---------------------------------------------------------------------------------------------- array kinds


def to_numpy(value: Array, dtype: str) -> np.ndarray:
    """A contiguous numpy array of ``dtype`` (torch tensors are moved to the CPU)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=dtype)


def from_numpy_like(values: Sequence[np.ndarray], like: Array) -> list[Array]:
    """Numpy results -> the kind of ``like`` (torch tensors on its device, or numpy arrays)."""
    if isinstance(like, torch.Tensor):
        return [torch.from_numpy(np.ascontiguousarray(v)).to(like.device) for v in values]
    return list(values)


def bare_or_tuple(values: Sequence[Any]) -> Any:
    return values[0] if len(values) == 1 else tuple(values)


# ---------------------------------------------------------------------------------------------- protocol


@runtime_checkable
class NetworkRunner(Protocol):
    """One network on one backend: ``runner(*inputs)`` in the official input order."""

    name: str
    io: NetworkIO

    def __call__(self, *inputs: Array) -> Any: ...


class LmdmSampling:
    """What the samplers need from an LMDM runner that only exposes the guided step (ONNX, TensorRT).

    Every sampler runs over it (each evaluation is one call of the whole guided step, condition encoder
    included) as long as its times are integers and its guidance weight is the baked one; the cached pair
    (:class:`~ditto_research.backends.lmdm_pair.CachedPairLmdm`) lifts both limits and encodes once per
    window.

    The subclass provides ``__call__(x, cond_frame, cond, time_cond) -> (pred_noise, x_start)`` and sets
    ``seq_frames``, ``motion_dim``, ``cond_dim`` and ``baked_guidance_weight``.
    """

    seq_frames: int
    motion_dim: int
    cond_dim: int
    baked_guidance_weight: float
    file_label: str = "the exported LMDM"

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        from ditto_research.diffusion.schedule import cosine_alphas_cumprod

        return cosine_alphas_cumprod()

    @property
    def guidance_weight(self) -> float:
        return self.baked_guidance_weight

    @guidance_weight.setter
    def guidance_weight(self, value: float) -> None:
        if abs(float(value) - self.baked_guidance_weight) > 1e-6:
            raise ConfigError(
                f"{self.file_label} has guidance weight {self.baked_guidance_weight:g} baked in, but "
                f"sampler.guidance_scale={float(value):g}; re-export it with "
                "`python -m ditto_research.export.onnx networks=[lmdm] "
                f"lmdm_guidance_weight={float(value):g}`, or export the "
                "cached LMDM pair, which takes any weight "
                "(`python -m ditto_research.export.onnx networks=[lmdm] lmdm_form=cached`), "
                "or use backend=pytorch"
            )

    def check_sampler(self, guidance_scale: float, times: torch.Tensor) -> None:
        """ConfigError now, before any window, when a sampler's weight or time grid cannot run on this
        LMDM."""
        self._check_guidance(guidance_scale)
        self._check_integer_times(times)

    def _check_guidance(self, guidance_scale: float | None) -> None:
        if guidance_scale is not None:
            self.guidance_weight = guidance_scale  # the setter refuses a weight other than the baked one

    def guided_denoiser(
        self,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        guidance_scale: float | None = None,
        times: torch.Tensor | None = None,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """D(x_t (B, N, F), t (B,)) -> guided x_0, for the samplers of
        :mod:`ditto_research.diffusion.samplers`.

        The exported graph takes integer times only; ``times`` (the planned evaluation times) is checked up
        front.
        """
        self._check_guidance(guidance_scale)
        if times is not None:
            self._check_integer_times(times)

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(t).reshape(-1)
            self._check_integer_times(t)
            steps = t.to(torch.int64).expand(x.shape[0]).contiguous()
            return self(x, cond_frame, cond, steps)[1]  # type: ignore[operator]

        return denoise

    def _check_integer_times(self, times: torch.Tensor) -> None:
        if times.is_floating_point() and not bool(torch.all(times == torch.round(times))):
            raise ConfigError(
                f"{self.file_label} takes integer diffusion times, but the sampler evaluates fractional "
                "ones; export the cached LMDM pair, which takes any time "
                "(`python -m ditto_research.export.onnx networks=[lmdm] lmdm_form=cached`), "
                "use sampler=ddim, or use backend=pytorch"
            )

    def predict_noise_from_start(
        self, x: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor
    ) -> torch.Tensor:
        """eps = x_t / sqrt(1 - a_t) - x_0 / sqrt(1 / a_t - 1), a = alphas_cumprod; t (B,) integer times."""
        alphas = self.alphas_cumprod.to(x.device)
        alpha = alphas[torch.as_tensor(t, device=x.device).long()].reshape(-1, *([1] * (x.dim() - 1)))
        return torch.sqrt(1.0 / (1.0 - alpha)) * x - x_start / torch.sqrt(1.0 / alpha - 1)


# --------------------------------------------------------------------------------------------- example inputs


def example_inputs(
    name: str, module: torch.nn.Module | None = None, batch: int = 1, seed: int = 0, image_size: int = 256
) -> tuple[torch.Tensor, ...]:
    """Random inputs in the value ranges the pipeline feeds (for export tracing, verification, benchmarks).

    Sizes come from ``module`` when given (so narrow ``tiny`` variants work), else the official ones. Images
    are in [0, 1], keypoints in [-0.6, 0.6], features and motion N(0, 1), diffusion times in [0, 999].
    """
    gen = torch.Generator().manual_seed(seed)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen)

    def keypoints(num_kp: int) -> torch.Tensor:
        return torch.rand((batch, num_kp, 3), generator=gen) * 1.2 - 0.6

    attr = (
        (lambda key, default: getattr(module, key, default))
        if module is not None
        else (lambda key, default: default)
    )
    feature_size = image_size // 4
    if name in ("appearance_extractor", "motion_extractor"):
        return (torch.rand((batch, 3, image_size, image_size), generator=gen),)
    if name == "warp_network":
        num_kp = attr("num_kp", 21)
        volume = normal(
            batch, attr("reshape_channel", 32), attr("reshape_depth", 16), feature_size, feature_size
        )
        return volume, keypoints(num_kp), keypoints(num_kp)
    if name == "decoder":
        return (normal(batch, attr("feature_channels", 256), feature_size, feature_size),)
    if name == "stitch_network":
        num_kp = module.mlp[0].in_features // 6 if module is not None else 21
        return keypoints(num_kp), keypoints(num_kp)
    if name == "lmdm":
        frames, motion, cond = attr("seq_frames", 80), attr("motion_dim", 265), attr("cond_dim", 1103)
        times = torch.randint(0, 1000, (batch,), generator=gen, dtype=torch.int64)
        return normal(batch, frames, motion), normal(batch, motion), normal(batch, frames, cond), times
    if name == "hubert":
        return (normal(batch, 6480) * 0.1,)
    raise ConfigError(f"unknown network {name!r}; choose one of: {', '.join(NETWORK_IO)}")
