"""The motion model's training objective: the released training code's ``MotionDiffusion.p_losses``.

One training step on a batch of windows (:class:`~ditto_research.data.TrainingWindows` items):

1. ``t`` uniform in [0, 1000), ``noise`` ~ N(0, 1), a condition keep-mask (each sample's condition kept with
   probability ``1 - cond_drop_prob``: classifier-free guidance training);
2. ``x_noisy = sqrt(a_t) x_0 + sqrt(1 - a_t) noise`` (a = the cosine schedule's alpha bar, as inference's);
3. ``x_recon`` = the LMDM's x_0 prediction of ``x_noisy`` given the previous frame's motion and the condition
   (the learned null embeddings where the mask drops it) — the very network inference samples with;
4. per motion part (scale, pitch, yaw, roll, t, exp: :data:`DEFAULT_PARTS`) with weight ``w``, MSE with mean
   reduction over the part's elements (a 1-column part weighs as much as the 63-column one):
   ``{part}_P`` positions, ``{part}_V`` first differences along the window, ``{part}_A`` second differences,
   ``{part}_L`` (``use_last_frame_loss``) the prediction's frame 0 against the previous frame's motion,
   ``{part}_R`` (``use_reg_loss``) mean |prediction| x 1e-4 (x 0 for scale; no weight);
   ``dim_ws`` (optional, (265,)) multiplies the squared errors per column. The loss is the plain sum.

``train_loss.npz`` (tests/train/test_objective.py) holds the reference's inputs and every output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ditto_research.errors import ConfigError
from ditto_research.models.lmdm import LMDM
from ditto_research.models.lmdm_reference import reference_x_start
from ditto_research.motion.format import MOTION_LAYOUT

__all__ = ["DEFAULT_PARTS", "LossPart", "Objective", "StepLoss", "motion_loss_terms", "q_sample"]

REG_WEIGHT = 1e-4  # the reference's weight of the |prediction| regulariser (0 for scale)


@dataclass(frozen=True)
class LossPart:
    """Columns ``[start, end)`` of the motion vector, weighted ``weight`` in every term of this part."""

    name: str
    start: int
    end: int
    weight: float = 1.0


def _default_parts() -> tuple[LossPart, ...]:
    parts = []
    for key in MOTION_LAYOUT.motion_keys:
        columns = MOTION_LAYOUT.slice(key)
        parts.append(LossPart(key, columns.start, columns.stop))
    return tuple(parts)


# The reference's fallback when no weights file is given (what its documented training run uses).
DEFAULT_PARTS = _default_parts()


@dataclass
class StepLoss:
    """One step's loss: ``total`` (scalar, differentiable), the named ``terms`` and the step's tensors."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    x_noisy: torch.Tensor
    x_recon: torch.Tensor


def q_sample(
    alphas_cumprod: torch.Tensor, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise; the square roots taken over the whole (T,) schedule first,
    as the reference's buffers hold them."""
    shape = (-1, *([1] * (x_start.dim() - 1)))
    sqrt_a = torch.sqrt(alphas_cumprod).gather(-1, t).reshape(shape)
    sqrt_one_minus_a = torch.sqrt(1.0 - alphas_cumprod).gather(-1, t).reshape(shape)
    return sqrt_a * x_start + sqrt_one_minus_a * noise


def motion_loss_terms(
    pred: torch.Tensor,
    target: torch.Tensor,
    cond_frame: torch.Tensor,
    parts: Sequence[LossPart] = DEFAULT_PARTS,
    *,
    use_last_frame_loss: bool = True,
    use_reg_loss: bool = False,
    dim_ws: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The named terms (see the module docstring) of predicted vs target windows (B, N, 265), in the
    reference's order and arithmetic (squared error, times the weight, then the mean)."""
    terms: dict[str, torch.Tensor] = {}
    for part in parts:
        s, e = part.start, part.end
        weight = part.weight if dim_ws is None else dim_ws[s:e][None, None] * part.weight
        p1, p2 = pred[..., s:e], target[..., s:e]
        v1, v2 = p1[:, 1:] - p1[:, :-1], p2[:, 1:] - p2[:, :-1]
        a1, a2 = v1[:, 1:] - v1[:, :-1], v2[:, 1:] - v2[:, :-1]
        terms[f"{part.name}_P"] = ((p1 - p2) ** 2 * weight).mean()
        terms[f"{part.name}_V"] = ((v1 - v2) ** 2 * weight).mean()
        terms[f"{part.name}_A"] = ((a1 - a2) ** 2 * weight).mean()
        if use_last_frame_loss:
            terms[f"{part.name}_L"] = ((p1[:, 0:1] - cond_frame[..., s:e][:, None]) ** 2 * weight).mean()
        if use_reg_loss:
            terms[f"{part.name}_R"] = torch.abs(p1).mean() * (0.0 if part.name == "scale" else REG_WEIGHT)
    return terms


class Objective:
    """The training loss of an :class:`~ditto_research.models.lmdm.LMDM` (x_0 prediction, MSE).

    Args:
        cond_drop_prob: probability that a sample's condition is replaced by the null embeddings (0.2).
        parts, use_last_frame_loss, use_reg_loss, dim_ws: the terms (module docstring); the defaults are the
            reference's documented training run.
        order: ``fast`` (the inference LMDM's arithmetic, differentiable: training) or ``reference`` (the
            original's operation order, bit for bit, no gradients: parity checks).
    """

    def __init__(
        self,
        cond_drop_prob: float = 0.2,
        parts: Sequence[LossPart] = DEFAULT_PARTS,
        *,
        use_last_frame_loss: bool = True,
        use_reg_loss: bool = False,
        dim_ws: torch.Tensor | None = None,
        order: Literal["fast", "reference"] = "fast",
    ) -> None:
        if not 0.0 <= cond_drop_prob <= 1.0:
            raise ConfigError(f"cond_drop_prob={cond_drop_prob} must be in [0, 1]")
        if order not in ("fast", "reference"):
            raise ConfigError(f"order={order!r} is not valid; choose one of: fast, reference")
        self.cond_drop_prob = cond_drop_prob
        self.parts = tuple(parts)
        self.use_last_frame_loss = use_last_frame_loss
        self.use_reg_loss = use_reg_loss
        self.dim_ws = dim_ws
        self.order = order

    def __call__(
        self,
        model: LMDM,
        x_start: torch.Tensor,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        *,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        keep_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> StepLoss:
        """The loss of windows ``x_start`` (B, N, 265) continuing ``cond_frame`` (B, 265) under ``cond``
        (B, N, C); ``t`` (B,) int64, ``noise`` and ``keep_mask`` (B,) bool are drawn (from ``generator``)
        unless given."""
        batch = x_start.shape[0]
        steps = model.alphas_cumprod.shape[0]
        if t is None:
            t = torch.randint(0, steps, (batch,), generator=generator, device=x_start.device)
        if noise is None:
            noise = torch.randn(
                x_start.shape, generator=generator, device=x_start.device, dtype=x_start.dtype
            )
        if keep_mask is None:
            draw = torch.rand(batch, generator=generator, device=x_start.device)
            keep_mask = draw < 1.0 - self.cond_drop_prob
        x_noisy = q_sample(model.alphas_cumprod, x_start, t, noise)
        if self.order == "reference":
            x_recon = reference_x_start(model, x_noisy, cond_frame, cond, t, keep=keep_mask)
        else:
            x_recon = model.denoise_masked(x_noisy, cond_frame, cond, t, keep_mask)
        terms = motion_loss_terms(
            x_recon,
            x_start,
            cond_frame,
            self.parts,
            use_last_frame_loss=self.use_last_frame_loss,
            use_reg_loss=self.use_reg_loss,
            dim_ws=self.dim_ws,
        )
        return StepLoss(sum(terms.values()), terms, x_noisy, x_recon)  # type: ignore[arg-type]
