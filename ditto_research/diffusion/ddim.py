"""Stochastic DDIM sampling exactly as Ditto's LMDM runs it (DDIM, Song et al. 2021).

Notation (code -> paper; the paper's alpha_t is the cumulative product, alpha-bar in DDPM notation):

    alphas_cumprod[t]   alpha_t
    alpha, alpha_next   alpha_t, alpha_{t_next}   (t_next: the next, less noisy time of the grid)
    x                   x_t
    x_start             f_theta(x_t), the predicted x_0
    pred_noise          eps_theta(x_t)
    sigma               sigma_t(eta), eq. 16
    c                   sqrt(1 - alpha_{t_next} - sigma_t^2), the weight of the "direction pointing to x_t"
    step_noises[i]      eps_t ~ N(0, I), the fresh noise of step i

The reference draws the per-step noises once, when a step count is first set up, and reuses them for every
later call with that step count; only x_T is drawn per call. :func:`draw_step_noises` draws them in that order
from the run's noise source (:mod:`ditto_research.diffusion.noise`; x_T follows per window,
:class:`~ditto_research.diffusion.samplers.WindowSampler`); the sampler itself only consumes injected tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ditto_research.diffusion.noise import NoiseSource, as_noise_source
from ditto_research.errors import ConfigError, InputError

__all__ = [
    "Denoiser",
    "ModelFn",
    "ddim_sample_reference",
    "ddim_step_coefficients",
    "draw_step_noises",
]

ModelFn = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
"""model_fn(x_t, t) -> (pred_noise, x_start), both shaped like x_t."""

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""denoise(x_t (B, ...), t (B,)) -> the (guided) x_0 prediction shaped like x_t; t may be fractional."""


def ddim_step_coefficients(
    alphas_cumprod: torch.Tensor, t: int, t_next: int, eta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sqrt(alpha_next), c, sigma) of the step t -> t_next, as 0-dim tensors in alphas_cumprod's dtype.

    With eta = 1, c^2 = 1 - alpha_next - sigma^2 is tiny at t = 999 and float32 rounding can make it negative
    (only the 5-step grid's first step, 999 -> 799); the reference then gets c = NaN and a NaN sample. It is
    clamped at 0 here, which changes nothing wherever the reference is finite.
    """
    alpha, alpha_next = alphas_cumprod[t], alphas_cumprod[t_next]
    sigma = eta * ((1 - alpha / alpha_next) * (1 - alpha_next) / (1 - alpha)).sqrt()  # eq. 16
    c = (1 - alpha_next - sigma**2).clamp(min=0).sqrt()
    return alpha_next.sqrt(), c, sigma


@torch.no_grad()
def ddim_sample_reference(
    model_fn: ModelFn,
    x_T: torch.Tensor,
    pairs: Sequence[tuple[int, int]],
    alphas_cumprod: torch.Tensor,
    step_noises: torch.Tensor | Sequence[torch.Tensor],
    eta: float = 1.0,
) -> torch.Tensor:
    """Run the DDIM chain over ``pairs`` from x_T and return x_0 (shaped like x_T).

    pairs: (t, t_next) from :func:`~ditto_research.diffusion.schedule.ddim_timestep_pairs`; t_next < 0 ends
    the chain with the model's x_0 prediction. step_noises: (S - 1, *x_T.shape) or a sequence of tensors, one
    per step with t_next >= 0, in order. alphas_cumprod: (T,) float32, may stay on the CPU.
    """
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"DDIM eta must be in [0, 1] (0: deterministic, 1: the reference), got {eta}")
    num_stochastic = sum(t_next >= 0 for _, t_next in pairs)
    if len(step_noises) < num_stochastic:
        raise InputError(
            f"DDIM needs {num_stochastic} step noises for {len(pairs)} steps, got {len(step_noises)}"
        )

    x = x_T
    noise_index = 0
    for t, t_next in pairs:
        # 1. Predict eps_theta(x_t) and x_0 = f_theta(x_t).
        pred_noise, x_start = model_fn(x, t)
        if t_next < 0:
            x = x_start
            continue
        # 2. Eq. 12: x_{t_next} = sqrt(alpha_next) x_0 + c eps_theta + sigma eps_t (reference operand order).
        alpha_next_sqrt, c, sigma = ddim_step_coefficients(alphas_cumprod, t, t_next, eta)
        x = x_start * alpha_next_sqrt + c * pred_noise + sigma * step_noises[noise_index]
        noise_index += 1
    return x


def draw_step_noises(
    steps: int,
    shape: Sequence[int],
    noise: NoiseSource | torch.Generator,
) -> torch.Tensor:
    """The per-step noises (steps - 1, *shape), drawn one ``randn(shape)`` at a time as the reference's setup
    does.

    Drawing them as one big tensor would give different numbers. ``noise``: the run's noise source (a bare
    ``torch.Generator`` is drawn with ``torch.randn``); the result is on its device.
    """
    if steps < 1:
        raise ConfigError(f"sampling steps must be a positive integer, got {steps}")
    source = as_noise_source(noise)
    noises = [source.randn(shape) for _ in range(steps - 1)]
    return torch.stack(noises) if noises else torch.empty((0, *shape), device=source.device)
