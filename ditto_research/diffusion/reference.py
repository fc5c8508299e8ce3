"""The original implementation's guided DDIM loop, kept as the baseline our fast path is tested and timed
against (tests/diffusion/test_samplers.py, benchmarks/samplers.py).

The reference's ``MotionDecoder.guided_forward`` runs two separate forward passes per step (unconditional,
then conditional), and each encodes the condition again: its ``forward`` encodes the condition before
replacing it by the null embedding. :func:`original_structure_ddim` repeats that structure on our LMDM, so
it costs what the original costs; our sampler (:func:`~ditto_research.diffusion.samplers.solve_window`)
encodes the condition once per window and batches both branches, and must give the same output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ditto_research.diffusion.ddim import ddim_sample_reference
from ditto_research.diffusion.schedule import ddim_timestep_pairs

if TYPE_CHECKING:
    from ditto_research.models.lmdm import LMDM

__all__ = ["REFERENCE_GUIDANCE", "Window", "original_structure_ddim", "relative_errors"]

REFERENCE_GUIDANCE = 2.0  # the reference's classifier-free guidance weight


@dataclass(frozen=True)
class Window:
    """One LMDM window's inputs: kp_cond (1, F), cond (1, N, C), x_T (1, N, F), ddim step noises
    (S-1, 1, N, F)."""

    kp_cond: torch.Tensor
    cond: torch.Tensor
    x_T: torch.Tensor
    step_noises: torch.Tensor


def original_structure_ddim(
    lmdm: LMDM, window: Window, steps: int, eta: float = 1.0, guidance: float = REFERENCE_GUIDANCE
) -> torch.Tensor:
    """The reference's DDIM loop: two separate guided forward passes per step, each encoding the condition.

    Returns the sampled motion window, shaped like ``window.x_T``.
    """
    kp_cond, cond = window.kp_cond, window.cond

    def model_fn(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        times = torch.full((x.shape[0],), t, dtype=torch.long)
        lmdm.encode_condition(cond)  # the reference encodes it in the dropped pass too, then discards it
        uncond = lmdm.denoise(x, kp_cond, cond, times, cond_drop_prob=1)
        conditioned = lmdm.denoise(x, kp_cond, cond, times, cond_drop_prob=0)
        x_start = uncond + (conditioned - uncond) * guidance
        return lmdm.predict_noise_from_start(x, times, x_start), x_start

    pairs = ddim_timestep_pairs(steps)
    return ddim_sample_reference(model_fn, window.x_T, pairs, lmdm.alphas_cumprod, window.step_noises, eta)


def relative_errors(ours: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(max |ours - ref| / max |ref|, ||ours - ref||_2 / ||ref||_2)."""
    diff = (ours - ref).double()
    return float(diff.abs().max() / ref.abs().max()), float(diff.norm() / ref.double().norm())
