"""Noise schedule and DDIM time grid of Ditto's LMDM (1000 training steps, cosine schedule).

Both follow the reference arithmetic exactly, because the sampler's output depends on every rounding here:

* betas come from the cosine schedule (Nichol & Dhariwal 2021) in float64, clipped to [0, 0.999], cast to
  float32; ``alphas_cumprod`` is ``torch.cumprod`` of the float32 ``1 - beta`` on the CPU (whose kernel
  accumulates in float64, unlike the CUDA one), so it is built on the CPU and moved afterwards;
* the DDIM times are ``torch.linspace(-1, T - 1, S + 1)`` in float32, truncated with ``.int()``: float32
  rounding decides the truncation, so the spacing is uneven when 1000 / S is not an integer, and can differ
  from exact arithmetic (S = 60 gives 248 where -1 + 1000 * 15 / 60 = 249).
"""

from __future__ import annotations

import math

import torch

from ditto_research.errors import ConfigError

__all__ = [
    "NUM_TRAIN_STEPS",
    "cosine_alphas_cumprod",
    "cosine_betas",
    "ddim_timestep_pairs",
]

NUM_TRAIN_STEPS = 1000
"""Diffusion steps the LMDM was trained with; its time embedding only knows t in [0, 999]."""


def cosine_betas(num_train_steps: int = NUM_TRAIN_STEPS, offset: float = 8e-3) -> torch.Tensor:
    """Cosine-schedule betas (T,) float32 on the CPU; ``offset`` is the schedule's small shift s."""
    if num_train_steps < 1:
        raise ConfigError(f"num_train_steps must be a positive integer, got {num_train_steps}")
    # alpha_bar(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2), normalised so alpha_bar(0) = 1.
    phase = torch.arange(num_train_steps + 1, dtype=torch.float64) / num_train_steps + offset
    alpha_bar = torch.cos(phase / (1 + offset) * math.pi / 2).pow(2)
    alpha_bar = alpha_bar / alpha_bar[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(min=0.0, max=0.999).to(torch.float32)


def cosine_alphas_cumprod(num_train_steps: int = NUM_TRAIN_STEPS) -> torch.Tensor:
    """alpha_bar_t = prod_{i <= t} (1 - beta_i), (T,) float32 on the CPU, as the reference buffer holds it."""
    return torch.cumprod(1.0 - cosine_betas(num_train_steps), dim=0)


def ddim_timestep_pairs(steps: int, num_train_steps: int = NUM_TRAIN_STEPS) -> list[tuple[int, int]]:
    """The reference DDIM time grid as ``steps`` pairs (t, t_next), from (T - 1, .) down to (t_1, -1).

    t_next = -1 marks the final step, which returns the model's x_0 prediction without adding noise.
    """
    if not 1 <= steps <= num_train_steps:
        raise ConfigError(
            f"sampling steps must be an integer in [1, {num_train_steps}] (the training steps), got {steps}"
        )
    # Must be torch's float32 linspace: its rounding, then truncation towards zero, is the reference grid.
    grid = torch.linspace(-1, num_train_steps - 1, steps=steps + 1, dtype=torch.float32, device="cpu")
    times = grid.int().tolist()[::-1]
    return list(zip(times[:-1], times[1:], strict=True))
