"""The LMDM as two graphs with the sampler speedups baked in, and the runner that samples over them.

The official ``lmdm_v0.4_hubert.onnx`` is one guided step: every call encodes the condition again, for both
guidance branches. Sampling a window calls it once per step with the same condition, so the PyTorch LMDM
computes the condition memory once per window (:meth:`~ditto_research.models.lmdm.LMDM.guided_denoiser`).
``python -m ditto_research.export.onnx lmdm_form=cached`` writes that split as two graphs (interfaces in
:data:`~ditto_research.backends.base.LMDM_PAIR_IO`):

    lmdm_v0.4_hubert_memory.onnx   cond (B, N, C) -> cond_hidden (B, 2, D), cond_keys, cond_values
                                   (B, L, 2, H, N, D/H)
    lmdm_v0.4_hubert_step.onnx     x (B, N, F), t (1,), cond_frame (B, F), cond_hidden, cond_keys,
                                   cond_values, guidance_weight (1,) -> x_start (B, N, F)

The memory graph runs the condition encoder and every decoder layer's cross-attention key/value projection of
the N condition tokens, for the null and the real condition (the 2 axis: [unconditional, conditional]). The
step graph holds no condition encoder: it embeds t (FiLM modulations, the 2 time tokens), decodes both
branches as one batch and combines them, ``uncond + (cond - uncond) * guidance_weight``. t is one float32 time
for the whole batch (samplers step every window element together; the runner splits a batch of mixed times),
so samplers on a continuous time grid work, and the guidance weight is an input, so any
``sampler.guidance_scale`` works (1.0 still runs both branches; the result equals the conditional branch to
float32 rounding).

:class:`ConditionMemoryGraph` and :class:`CachedStepGraph` are the torch modules the graphs are traced from
(and verified against); :class:`CachedPairLmdm` is the backend-neutral runner over two compiled graphs
(onnxruntime sessions or TensorRT engines).

Shape legend: B batch, N frames (80), F motion features (265), C condition features (1103), D latent width
(512), L decoder layers (8), H heads (8).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ditto_research.backends.base import LMDM_PAIR_IO, Array, LmdmSampling, NetworkIO, bare_or_tuple, get_io
from ditto_research.errors import ConfigError, InputError
from ditto_research.models.lmdm import LMDM, DecoderMemory

__all__ = ["CachedPairLmdm", "CachedStepGraph", "ConditionMemoryGraph", "GraphFn", "pair_example_inputs"]

GraphFn = Callable[..., list[torch.Tensor]]
"""A compiled graph: tensors in its input order -> its outputs as torch tensors."""

GUIDANCE_BRANCHES = 2  # [unconditional, conditional], stacked branch-major as the LMDM does


class ConditionMemoryGraph(nn.Module):
    """cond (B, N, C) -> the decoder memory of both guidance branches, batch-first.

    Returns cond_hidden (B, 2, D) and cond_keys, cond_values (B, L, 2, H, N, D/H). Batch-first layouts keep
    the batch on axis 0 of every tensor (one dynamic axis for exports and TensorRT profiles).
    """

    def __init__(self, lmdm: LMDM) -> None:
        super().__init__()
        self.lmdm = lmdm

    def forward(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lmdm = self.lmdm
        tokens, hidden = lmdm.encode_condition(cond)
        null_tokens, null_hidden = lmdm.null_condition(cond.shape[0])
        # The frame before the window is not part of this memory: the step graph takes it directly.
        memory = lmdm.prepare_memory(
            cond.new_empty(0),
            torch.cat([null_tokens, tokens]),
            torch.cat([null_hidden, hidden]),
            branches=GUIDANCE_BRANCHES,
        )
        keys = torch.stack([key for key, _ in memory.cond_key_values])  # (L, 2B, H, N, D/H)
        values = torch.stack([value for _, value in memory.cond_key_values])
        return (
            _batch_first(memory.cond_hidden, branch_axis=0),
            _batch_first(keys, branch_axis=1),
            _batch_first(values, branch_axis=1),
        )


def _batch_first(stacked: torch.Tensor, branch_axis: int) -> torch.Tensor:
    """Branch-major (..., 2B, ...) at ``branch_axis`` -> (B, ..., 2, ...) with the batch moved to axis 0."""
    split = stacked.unflatten(branch_axis, (GUIDANCE_BRANCHES, -1))  # (..., 2, B, ...)
    return split.movedim(branch_axis + 1, 0)


def _branch_major(batch_first: torch.Tensor, branch_axis: int) -> torch.Tensor:
    """Inverse of :func:`_batch_first`: (B, ..., 2, ...) -> (..., 2B, ...) with the branches at
    ``branch_axis``."""
    return batch_first.movedim(0, branch_axis + 1).flatten(branch_axis, branch_axis + 1)


class CachedStepGraph(nn.Module):
    """One guided denoising step over a prepared memory: x_t (B, N, F), t (1,) -> guided x_0 (B, N, F).

    Inputs in :data:`~ditto_research.backends.base.LMDM_PAIR_IO` ``lmdm_step`` order; the same arithmetic as
    the LMDM's ``guided_denoiser`` on a time grid (``condition_steps`` for the one time, then
    ``decode_prepared`` on the memory of :class:`ConditionMemoryGraph`).
    """

    def __init__(self, lmdm: LMDM) -> None:
        super().__init__()
        self.lmdm = lmdm

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond_frame: torch.Tensor,
        cond_hidden: torch.Tensor,
        cond_keys: torch.Tensor,
        cond_values: torch.Tensor,
        guidance_weight: torch.Tensor,
    ) -> torch.Tensor:
        lmdm = self.lmdm
        keys, values = _branch_major(cond_keys, 1), _branch_major(cond_values, 1)  # (L, 2B, H, N, D/H)
        memory = DecoderMemory(
            cond_frame=cond_frame,
            cond_hidden=_branch_major(cond_hidden, 0),
            cond_key_values=list(zip(keys.unbind(0), values.unbind(0))),
            rope=lmdm.rotary.tables(lmdm.seq_frames + 2),  # a constant of the graph
            branches=GUIDANCE_BRANCHES,
        )
        # One time for the batch: its time-token keys/values have batch 1 and are tiled per row of the memory
        # (a per-row time would make the exporter divide two batch sizes, which it mis-folds to a constant).
        (step,) = lmdm.condition_steps(memory, t.reshape(1))
        uncond, cond = lmdm.decode_prepared(x, memory, t, step).chunk(GUIDANCE_BRANCHES)
        return uncond + (cond - uncond) * guidance_weight  # the reference's operand order


def pair_example_inputs(
    graph: str, lmdm: LMDM, batch: int = 1, seed: int = 0, guidance_weight: float = 2.0
) -> tuple[torch.Tensor, ...]:
    """Random inputs of ``graph`` (``lmdm_memory`` | ``lmdm_step``) sized from ``lmdm``, for tracing and
    checks.

    Condition and motion are N(0, 1), t uniform in [0, 999]; the step's memory is computed by
    :class:`ConditionMemoryGraph` from a random condition, so it has the values the step really sees.
    """
    if graph not in LMDM_PAIR_IO:
        raise ConfigError(f"unknown LMDM pair graph {graph!r}; choose one of: {', '.join(LMDM_PAIR_IO)}")
    gen = torch.Generator().manual_seed(seed)
    frames, motion, cond_dim = lmdm.seq_frames, lmdm.motion_dim, lmdm.cond_dim
    cond = torch.randn((batch, frames, cond_dim), generator=gen)
    if graph == "lmdm_memory":
        return (cond,)
    x = torch.randn((batch, frames, motion), generator=gen)
    t = torch.rand((1,), generator=gen) * 999.0
    cond_frame = torch.randn((batch, motion), generator=gen)
    with torch.no_grad():
        memory = ConditionMemoryGraph(lmdm)(cond)
    return (x, t, cond_frame, *memory, torch.tensor([guidance_weight]))


class CachedPairLmdm(LmdmSampling):
    """The LMDM runner over the cached pair: the sampler interface with the condition encoded once per window.

    ``memory_graph(cond)`` and ``step_graph(x, t, cond_frame, *memory, guidance_weight)`` are the two compiled
    graphs (torch tensors in, torch tensors out, on ``device``). :meth:`guided_denoiser` runs the memory graph
    once and returns D(x_t, t) running only the step graph; the official call ``runner(x, cond_frame, cond,
    time_cond) -> (pred_noise, x_start)`` is kept (memory + one step). Any guidance weight, any float time.
    """

    name = "lmdm"

    def __init__(
        self,
        memory_graph: GraphFn,
        step_graph: GraphFn,
        *,
        seq_frames: int,
        motion_dim: int,
        cond_dim: int,
        guidance_weight: float,
        label: str,
        device: torch.device | str = "cpu",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.io: NetworkIO = get_io("lmdm")
        self.memory_graph = memory_graph
        self.step_graph = step_graph
        self.seq_frames, self.motion_dim, self.cond_dim = int(seq_frames), int(motion_dim), int(cond_dim)
        self.default_guidance_weight = float(guidance_weight)
        self.file_label = label
        self.device = torch.device(device)
        self.precision = "fp32"
        self.metadata = dict(metadata or {})

    # The weight is a graph input: unlike the official file's baked weight, every value is accepted.
    @property
    def guidance_weight(self) -> float:
        return self.default_guidance_weight

    @guidance_weight.setter
    def guidance_weight(self, value: float) -> None:
        self.default_guidance_weight = float(value)

    def check_sampler(self, guidance_scale: float, times: torch.Tensor) -> None:
        """Every guidance weight and time grid runs on the pair: nothing to refuse."""

    def _tensor(self, value: Array | float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
        return tensor.to(device=self.device, dtype=dtype)

    def encode_memory(self, cond: Array) -> list[torch.Tensor]:
        """cond (B, N, C) -> [cond_hidden, cond_keys, cond_values] (see the module docstring), on
        ``device``."""
        cond_tensor = self._tensor(cond)
        if cond_tensor.dim() != 3 or tuple(cond_tensor.shape[1:]) != (self.seq_frames, self.cond_dim):
            raise InputError(
                f"{self.file_label}: the condition must be (B, {self.seq_frames}, {self.cond_dim}), got "
                f"{tuple(cond_tensor.shape)}; build it with the flags the LMDM was exported with"
            )
        return self.memory_graph(cond_tensor)

    def guided_denoiser(
        self,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        guidance_scale: float | None = None,
        times: torch.Tensor | None = None,
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """D(x_t (B, N, F), t (scalar or (B,), int or float)) -> guided x_0 (B, N, F), on x_t's device.

        cond_frame (B, F), cond (B, N, C); guidance_scale None = :attr:`guidance_weight`. ``times`` (the
        sampler's grid) needs no preparation here: the step graph embeds t itself, once per call.
        """
        del times  # accepted for the samplers' interface; every time works
        memory = self.encode_memory(cond)
        frame = self._tensor(cond_frame)
        weight = self._tensor([self.guidance_weight if guidance_scale is None else float(guidance_scale)])

        def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x_start = self._step(self._tensor(x), self._tensor(t).reshape(-1), frame, memory, weight)
            return x_start.to(x.device) if isinstance(x, torch.Tensor) else x_start

        return denoise

    def _step(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        frame: torch.Tensor,
        memory: list[torch.Tensor],
        weight: torch.Tensor,
    ) -> torch.Tensor:
        """x (B, N, F), t (1,) or (B,) float32 -> x_start (B, N, F); rows with different times run one by
        one."""
        if t.numel() == 1 or bool(torch.all(t == t[0])):
            (x_start,) = self.step_graph(x, t[:1].contiguous(), frame, *memory, weight)
            return x_start
        if t.numel() != x.shape[0]:
            raise InputError(f"{self.file_label}: {t.numel()} times for a batch of {x.shape[0]}")
        rows = [
            self.step_graph(
                x[i : i + 1], t[i : i + 1], frame[i : i + 1], *(m[i : i + 1] for m in memory), weight
            )[0]
            for i in range(x.shape[0])
        ]
        return torch.cat(rows)

    def __call__(self, *inputs: Array) -> Any:
        """The official guided step: (x, cond_frame, cond, time_cond) -> (pred_noise, x_start)."""
        if len(inputs) != len(self.io.inputs):
            raise InputError(
                f"lmdm takes {len(self.io.inputs)} inputs {list(self.io.input_names)}, got {len(inputs)}"
            )
        x, cond_frame, cond = (self._tensor(value) for value in inputs[:3])
        time_cond = self._tensor(inputs[3], torch.int64).reshape(-1).expand(x.shape[0])
        x_start = self.guided_denoiser(cond_frame, cond)(x, time_cond)
        outputs: Sequence[torch.Tensor] = (self.predict_noise_from_start(x, time_cond, x_start), x_start)
        like = inputs[0]
        if isinstance(like, torch.Tensor):
            return bare_or_tuple([out.to(like.device) for out in outputs])
        return bare_or_tuple([out.cpu().numpy() for out in outputs])
