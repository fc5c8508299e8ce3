"""Diffusion samplers for the LMDM's motion windows, all behind one interface.

``make_window_sampler(lmdm, name, steps=..., ...)`` returns a :class:`WindowSampler`:
``(kp_cond (1, F), cond (1, N, C)) -> motion (1, N, F)``. Each sampler is a :class:`SamplingPlan` (the times
it evaluates the network at, and a solver ``(denoise, x_T) -> x_0``) registered in :data:`SAMPLERS`.

* ``ddim``: Ditto's stochastic DDIM, bit for bit (:mod:`ditto_research.diffusion.ddim`); ``eta`` 0 makes it
  the deterministic DDIM ODE solver.
* ``dpmpp_2m``, ``unipc``, ``euler``, ``heun``: deterministic probability-flow ODE solvers from diffusers'
  schedulers, set up for this model: its cosine betas (``trained_betas``), an x_0-predicting network
  (``prediction_type="sample"``), "trailing" timesteps (the first step at t = 999 like the reference, the
  last one at 1000 / S - 1; Lin et al. 2024, table 2) and a final step to sigma = 0 (they return x_0).

Randomness: a sampler draws from one noise source (:mod:`ditto_research.diffusion.noise`: a seeded torch
generator, a NumPy RandomState, or a recorded stream), in a fixed order, so a run is reproducible from its
seed: ddim first draws its S - 1 step noises (once per run, shared by every window, as the reference does),
then every sampler draws one x_T per window.

Notation (code -> papers):

    alphas_cumprod[t]   alpha-bar_t of DDPM (Ho et al. 2020) = alpha_t of DDIM (Song et al. 2021)
    x_T                 the window's start, x at t = 999, ~ N(0, I) (variance-preserving scale)
    denoise(x, t)       D(x_t, t): the guided x_0 prediction, uncond + w (cond - uncond)
                        (classifier-free guidance, Ho & Salimans 2022, eq. 6)
    guidance_scale      w (1.0: the conditional branch alone, one network pass per step)
    sigma (euler, heun) sqrt((1 - alpha-bar_t) / alpha-bar_t): the noise level of the variance-exploding
                        form x_t / sqrt(alpha-bar_t) (Karras et al. 2022, eq. 1; scale_model_input maps back)
    lambda (dpmpp_2m)   log(sqrt(alpha-bar_t) / sqrt(1 - alpha-bar_t)), the half log-SNR (Lu et al. 2022)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import torch

from ditto_research.choices import SAMPLER_NAMES, SAMPLER_OPTIONS, check_choice
from ditto_research.diffusion.ddim import Denoiser, ddim_sample_reference, draw_step_noises
from ditto_research.diffusion.noise import NoiseSource, as_noise_source
from ditto_research.diffusion.schedule import NUM_TRAIN_STEPS, cosine_betas, ddim_timestep_pairs
from ditto_research.errors import ConfigError, InputError

__all__ = [
    "SAMPLERS",
    "SamplerSpec",
    "SamplingPlan",
    "WindowSampler",
    "check_sampler_options",
    "make_plan",
    "make_window_sampler",
    "solve_window",
]

Solver = Callable[[Denoiser, torch.Tensor], torch.Tensor]
"""solve(denoise, x_T (B, N, F)) -> x_0 (B, N, F)."""


class GuidedLMDM(Protocol):
    """What the samplers need of the LMDM (:class:`~ditto_research.models.lmdm.LMDM` has it)."""

    alphas_cumprod: torch.Tensor
    seq_frames: int
    motion_dim: int

    def guided_denoiser(
        self,
        cond_frame: torch.Tensor,
        cond: torch.Tensor,
        guidance_scale: float | None = None,
        times: torch.Tensor | None = None,
    ) -> Denoiser: ...

    def predict_noise_from_start(
        self, x: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class SamplingPlan:
    """One sampler at one step count: the times it evaluates D at (in order, repeats kept) and its solver."""

    name: str
    steps: int
    times: torch.Tensor
    """(E,) one entry per network evaluation; E = :attr:`evaluations`."""
    solve: Solver

    @property
    def evaluations(self) -> int:
        """Network evaluations per window (each one guided pass: both branches as one batch)."""
        return int(self.times.numel())


# ---- ddim: the reference, by hand --------------------------------------------------------------------------


def _ddim_plan(
    lmdm: GuidedLMDM, steps: int, eta: float, step_noises: torch.Tensor | Sequence[torch.Tensor]
) -> SamplingPlan:
    """Ditto's DDIM (Song et al. 2021, eq. 12) on the reference grid with injected per-step noises."""
    pairs = ddim_timestep_pairs(steps)
    times = torch.tensor([t for t, _ in pairs], dtype=torch.long)
    alphas_cumprod = lmdm.alphas_cumprod

    def solve(denoise: Denoiser, x_T: torch.Tensor) -> torch.Tensor:
        def model_fn(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
            # eps_theta from x_0 exactly as the reference's predict_noise_from_start (same operand order).
            t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            x_start = denoise(x, t_batch)
            return lmdm.predict_noise_from_start(x, t_batch, x_start), x_start

        return ddim_sample_reference(model_fn, x_T, pairs, alphas_cumprod, step_noises, eta=eta)

    return SamplingPlan("ddim", steps, times, solve)


# ---- ODE solvers from diffusers ----------------------------------------------------------------------------


def _dpmpp_2m_scheduler(betas: torch.Tensor) -> Any:
    """DPM-Solver++(2M), Lu et al. 2022 (arXiv 2211.01095), algorithm 2: multistep, 2nd order in lambda."""
    from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=NUM_TRAIN_STEPS,
        trained_betas=betas.numpy(),
        algorithm_type="dpmsolver++",
        solver_order=2,
        prediction_type="sample",
        timestep_spacing="trailing",
        final_sigmas_type="zero",
    )


def _unipc_scheduler(betas: torch.Tensor) -> Any:
    """UniPC, Zhao et al. 2023 (arXiv 2302.04867): UniP-2 predictor + UniC corrector (bh2), data
    prediction."""
    from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler

    return UniPCMultistepScheduler(
        num_train_timesteps=NUM_TRAIN_STEPS,
        trained_betas=betas.numpy(),
        solver_order=2,
        prediction_type="sample",
        predict_x0=True,
        solver_type="bh2",
        timestep_spacing="trailing",
        final_sigmas_type="zero",
    )


def _euler_scheduler(betas: torch.Tensor) -> Any:
    """Euler on the probability-flow ODE dx/dsigma = (x - D(x)) / sigma, Karras et al. 2022, algorithm 1."""
    from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        num_train_timesteps=NUM_TRAIN_STEPS,
        trained_betas=betas.numpy(),
        prediction_type="sample",
        timestep_spacing="trailing",
        final_sigmas_type="zero",
    )


def _heun_scheduler(betas: torch.Tensor) -> Any:
    """Heun's 2nd-order method on the same ODE, Karras et al. 2022, algorithm 1 (2 S - 1 evaluations).

    Here sigma_max = sigma(999) is about 2e4 (betas clipped at 0.999), and the trapezoidal correction scales
    the change of D between t and t_next by about sigma_t / (2 sigma_next): few-step heun is far off (measured
    in docs/samplers.md), unlike dpmpp_2m / unipc, which step in log-SNR with x_0 prediction.
    """
    from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteScheduler

    return HeunDiscreteScheduler(
        num_train_timesteps=NUM_TRAIN_STEPS,
        trained_betas=betas.numpy(),
        prediction_type="sample",
        timestep_spacing="trailing",
    )


def _diffusers_plan(name: str, make_scheduler: Callable[[torch.Tensor], Any], steps: int) -> SamplingPlan:
    """Wrap a diffusers scheduler as a solver; a fresh scheduler per window keeps windows independent."""
    betas = cosine_betas()
    try:
        template = make_scheduler(betas)
    except ImportError as e:
        raise ConfigError(
            f"sampler={name} needs the diffusers package (pip install diffusers); sampler=ddim does not"
        ) from e
    template.set_timesteps(steps)
    times = template.timesteps.clone()

    def solve(denoise: Denoiser, x_T: torch.Tensor) -> torch.Tensor:
        scheduler = make_scheduler(betas)
        scheduler.set_timesteps(steps, device=x_T.device)
        # 1. x_T is N(0, I) at t = 999; the scheduler's own parameterisation may scale it
        # (Euler/Heun: by sigma).
        x = x_T * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            # 2. D sees the variance-preserving x_t; the scheduler's update (its paper's equation) does the
            # rest.
            x_start = denoise(scheduler.scale_model_input(x, t), t.reshape(1))
            x = scheduler.step(x_start, t, x, return_dict=False)[0]
        return x

    return SamplingPlan(name, steps, times, solve)


# ---- registry ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler: what it is and which options it takes (:data:`ditto_research.choices.
    SAMPLER_OPTIONS`, the table the config schemas read too)."""

    name: str
    summary: str
    scheduler: Callable[[torch.Tensor], Any] | None = None
    """diffusers scheduler factory (betas -> scheduler); None for the hand-written ddim."""

    @property
    def options(self) -> tuple[str, ...]:
        """The options this sampler takes beyond the common ones (steps, guidance_scale)."""
        return SAMPLER_OPTIONS[self.name]

    @property
    def takes_eta(self) -> bool:
        return "eta" in self.options


# One entry per name of choices.SAMPLER_NAMES, in its order (tests/diffusion/test_samplers.py checks it).
SAMPLERS: Mapping[str, SamplerSpec] = MappingProxyType(
    {
        "ddim": SamplerSpec("ddim", "Ditto's stochastic DDIM (Song et al. 2021), reference-exact"),
        "dpmpp_2m": SamplerSpec("dpmpp_2m", "DPM-Solver++(2M) (Lu et al. 2022)", _dpmpp_2m_scheduler),
        "unipc": SamplerSpec("unipc", "UniPC, bh2, order 2 (Zhao et al. 2023)", _unipc_scheduler),
        "euler": SamplerSpec("euler", "Euler ODE step (Karras et al. 2022)", _euler_scheduler),
        "heun": SamplerSpec("heun", "Heun 2nd-order ODE step (Karras et al. 2022)", _heun_scheduler),
    }
)


def check_sampler_options(name: str, steps: int, eta: float | None, guidance_scale: float) -> None:
    """Raise ConfigError naming the allowed values when a sampler option is invalid or unsupported."""
    check_choice("sampler", name, SAMPLER_NAMES)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= NUM_TRAIN_STEPS:
        raise ConfigError(
            f"sampler.steps={steps} is out of range; it must be an integer in [1, {NUM_TRAIN_STEPS}]"
        )
    if eta is not None:
        if "eta" not in SAMPLER_OPTIONS[name]:
            takers = ", ".join(n for n, options in SAMPLER_OPTIONS.items() if "eta" in options)
            raise ConfigError(
                f"sampler.eta is not an option of sampler={name} (a deterministic ODE solver); "
                f"only {takers} takes eta: remove sampler.eta or pick sampler=ddim"
            )
        if not 0.0 <= eta <= 1.0:
            raise ConfigError(f"sampler.eta={eta} is out of range; it must lie in [0.0, 1.0]")
    if not guidance_scale >= 0.0:
        raise ConfigError(
            f"sampler.guidance_scale={guidance_scale} is out of range; it must lie in [0.0, inf]"
        )


def make_plan(
    lmdm: GuidedLMDM,
    name: str,
    steps: int,
    *,
    eta: float | None = None,
    generator: NoiseSource | torch.Generator | None = None,
    step_noises: torch.Tensor | Sequence[torch.Tensor] | None = None,
) -> SamplingPlan:
    """Build sampler ``name`` at ``steps`` steps for windows shaped like ``lmdm``'s.

    ddim takes its per-step noises from ``step_noises`` ((S - 1, 1, N, F)) or draws them from ``generator``
    (a noise source or a torch generator) now: the first draws of a run. eta None = 1.0 (the reference). The
    ODE solvers draw nothing.
    """
    check_sampler_options(name, steps, eta, 1.0)
    spec = SAMPLERS[name]
    if spec.scheduler is not None:
        return _diffusers_plan(name, spec.scheduler, steps)
    if step_noises is None:
        if generator is None:
            raise InputError(
                "the ddim sampler needs a generator (or injected step_noises) for its step noises"
            )
        step_noises = draw_step_noises(steps, (1, lmdm.seq_frames, lmdm.motion_dim), generator)
    return _ddim_plan(lmdm, steps, 1.0 if eta is None else eta, step_noises)


@torch.no_grad()
def solve_window(
    lmdm: GuidedLMDM,
    plan: SamplingPlan,
    kp_cond: torch.Tensor,
    cond: torch.Tensor,
    x_T: torch.Tensor,
    guidance_scale: float = 2.0,
) -> torch.Tensor:
    """Sample one window from a given x_T: kp_cond (B, F), cond (B, N, C), x_T (B, N, F) -> x_0 (B, N, F).

    The condition is encoded, and every time-dependent input of the plan's grid prepared, once here.
    """
    times = plan.times.to(lmdm.alphas_cumprod.device)
    denoise = lmdm.guided_denoiser(kp_cond, cond, guidance_scale, times=times)
    return plan.solve(denoise, x_T)


class WindowSampler:
    """``(kp_cond (1, F), cond (1, N, C)) -> motion (1, N, F)``, one window after another.

    x_T is drawn per window from the run's noise source, after whatever the plan drew at setup (ddim: its
    step noises), so the draw order is the reference's and a run is reproducible from its seed.
    """

    def __init__(
        self,
        lmdm: GuidedLMDM,
        plan: SamplingPlan,
        guidance_scale: float,
        noise: NoiseSource | torch.Generator,
    ) -> None:
        self.lmdm = lmdm
        self.plan = plan
        self.guidance_scale = float(guidance_scale)
        self.noise = as_noise_source(noise)
        self.windows = 0

    def next_x_T(self) -> torch.Tensor:
        """The next window's x_T (1, N, F) from the noise source."""
        return self.noise.randn((1, self.lmdm.seq_frames, self.lmdm.motion_dim))

    def __call__(self, kp_cond: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x_T = self.next_x_T()
        self.windows += 1
        return solve_window(self.lmdm, self.plan, kp_cond, cond, x_T, self.guidance_scale)


def make_window_sampler(
    lmdm: GuidedLMDM,
    name: str,
    *,
    steps: int,
    eta: float | None = None,
    guidance_scale: float = 2.0,
    generator: NoiseSource | torch.Generator,
) -> WindowSampler:
    """The window sampler for ``sampler=name``: validates the options, then draws ddim's step noises.

    eta: ddim only (None = 1.0, the reference); guidance_scale: w, 1.0 = no unconditional pass;
    generator: the run's noise source (a torch generator is drawn with ``torch.randn``).
    """
    check_sampler_options(name, steps, eta, guidance_scale)
    noise = as_noise_source(generator)
    plan = make_plan(lmdm, name, steps, eta=eta, generator=noise)
    return WindowSampler(lmdm, plan, guidance_scale, noise)
