"""Cosine schedule, DDIM time grid and the reference DDIM sampler (golden: lmdm_ddim_sample_s10 / _s50, run
through the pipeline's sampler path)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from ditto_research.diffusion.ddim import ddim_sample_reference, ddim_step_coefficients, draw_step_noises
from ditto_research.diffusion.samplers import make_plan, solve_window
from ditto_research.diffusion.schedule import cosine_alphas_cumprod, cosine_betas, ddim_timestep_pairs
from ditto_research.errors import ConfigError, InputError
from ditto_research.models.lmdm import LMDM
from tests.conftest import require_golden_kernels
from tests.helpers import max_abs_err


def exact_pairs(steps: int) -> list[tuple[int, int]]:
    """The grid in exact arithmetic: trunc(-1 + 1000 i / S) for i = S..0, paired with the next entry."""
    times = [math.trunc(Fraction(-1) + Fraction(1000 * i, steps)) for i in range(steps, -1, -1)]
    return list(zip(times[:-1], times[1:], strict=True))


@pytest.mark.parametrize("steps", [7, 30, 10, 50, 1, 1000])
def test_timestep_pairs_match_an_independent_computation(steps: int) -> None:
    pairs = ddim_timestep_pairs(steps)
    assert pairs == exact_pairs(steps)
    assert len(pairs) == steps and pairs[0][0] == 999 and pairs[-1][1] == -1
    assert all(t > t_next for t, t_next in pairs)


def test_timestep_pairs_are_uneven_when_1000_over_steps_is_not_integral() -> None:
    gaps = [t - t_next for t, t_next in ddim_timestep_pairs(7)]
    assert gaps == [143] * 6 + [142]
    assert ddim_timestep_pairs(7)[-1] == (141, -1)


def test_timestep_pairs_follow_float32_rounding_not_exact_arithmetic() -> None:
    """S = 60: float32 linspace gives 248.99998 and 448.99997, truncated to 248 / 448 (exact math: 249 / 449).

    This is the reference's own grid (torch.linspace in float32 with the CPU kernel's fused multiply-add);
    golden sets built with such step counts depend on it.
    """
    times = {t for pair in ddim_timestep_pairs(60) for t in pair}
    exact = {t for pair in exact_pairs(60) for t in pair}
    assert times ^ exact == {248, 249, 448, 449}
    assert {248, 448} <= times


@pytest.mark.parametrize("steps", [0, 1001])
def test_timestep_pairs_reject_out_of_range_steps(steps: int) -> None:
    with pytest.raises(ConfigError, match=r"\[1, 1000\]"):
        ddim_timestep_pairs(steps)


def test_cosine_schedule_properties() -> None:
    betas = cosine_betas()
    alphas_cumprod = cosine_alphas_cumprod()
    assert betas.dtype == alphas_cumprod.dtype == torch.float32 and betas.shape == (1000,)
    assert float(betas.min()) > 0 and float(betas.max()) == pytest.approx(0.999)
    assert bool((alphas_cumprod[1:] < alphas_cumprod[:-1]).all())
    assert float(alphas_cumprod[0]) == pytest.approx(1 - float(betas[0]))


def test_step_coefficients_follow_the_ddim_formulas() -> None:
    alphas_cumprod = cosine_alphas_cumprod().double()
    a, an = float(alphas_cumprod[500]), float(alphas_cumprod[300])
    alpha_next_sqrt, c, sigma = ddim_step_coefficients(alphas_cumprod, 500, 300, eta=0.5)
    ref_sigma = 0.5 * math.sqrt((1 - a / an) * (1 - an) / (1 - a))
    assert float(sigma) == pytest.approx(ref_sigma, rel=1e-12)
    assert float(c) == pytest.approx(math.sqrt(1 - an - ref_sigma**2), rel=1e-12)
    assert float(alpha_next_sqrt) == pytest.approx(math.sqrt(an), rel=1e-12)


def test_deterministic_ddim_recovers_x0_of_a_perfect_model() -> None:
    """eta = 0 with an exact eps/x0 oracle keeps eps fixed along the chain and ends at x0 (eq. 12)."""
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64)
    alphas_cumprod = cosine_alphas_cumprod().double()
    pairs = ddim_timestep_pairs(20)
    seen: list[torch.Tensor] = []

    def oracle(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(x)
        a = alphas_cumprod[t]
        return (x - a.sqrt() * x0) / (1 - a).sqrt(), x0

    a_T = alphas_cumprod[pairs[0][0]]
    x_T = a_T.sqrt() * x0 + (1 - a_T).sqrt() * eps
    noises = 100 * torch.randn(19, 4, 3, generator=gen, dtype=torch.float64)  # eta = 0: sigma = 0 drops them
    out = ddim_sample_reference(oracle, x_T, pairs, alphas_cumprod, noises, eta=0.0)
    torch.testing.assert_close(out, x0)
    a_mid = alphas_cumprod[pairs[10][0]]
    torch.testing.assert_close(seen[10], a_mid.sqrt() * x0 + (1 - a_mid).sqrt() * eps)


def test_sampler_adds_step_noise_in_order() -> None:
    """With a model predicting zeros, x after step i is exactly sigma_i * noise_i."""
    alphas_cumprod = cosine_alphas_cumprod()
    pairs = ddim_timestep_pairs(6)
    noises = torch.arange(1.0, 6.0).reshape(5, 1)
    seen: list[torch.Tensor] = []

    def zero_model(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(x)
        return torch.zeros_like(x), torch.zeros_like(x)

    out = ddim_sample_reference(zero_model, torch.ones(1), pairs, alphas_cumprod, noises)
    assert torch.equal(out, torch.zeros(1)) and len(seen) == 6
    for i, (t, t_next) in enumerate(pairs[:-1]):
        sigma = ddim_step_coefficients(alphas_cumprod, t, t_next)[2]
        assert torch.equal(seen[i + 1], sigma * noises[i])


def test_step_coefficients_stay_finite_where_float32_rounding_goes_negative() -> None:
    """5 steps, 999 -> 799: 1 - alpha_next - sigma^2 can round below 0 in float32 (the reference then gets
    NaN). Whether it does for the real schedule depends on the host's sqrt (it does on the golden machine's
    kernels, not on a correctly rounded one), so alpha_next is moved by a few ulps until it does here."""
    alphas_cumprod = cosine_alphas_cumprod()
    a = alphas_cumprod[999]

    def negative(an: torch.Tensor) -> bool:
        sigma_sq = ((1 - a / an) * (1 - an) / (1 - a)).sqrt() ** 2
        return float(1 - an - sigma_sq) < 0

    an = alphas_cumprod[799].clone()
    for _ in range(64):  # within 64 ulps below alphas_cumprod[799] (measured: 8-16 here, 0 on the goldens')
        if negative(an):
            break
        an = torch.nextafter(an, torch.tensor(0.0))
    assert negative(an), "no alpha_next near alphas_cumprod[799] rounds negative on this host"
    schedule = alphas_cumprod.clone()
    schedule[799] = an
    coefficients = torch.stack(ddim_step_coefficients(schedule, 999, 799))
    assert bool(coefficients.isfinite().all()) and float(coefficients[1]) == 0.0


def test_sampler_validates_eta_and_noise_count() -> None:
    pairs = ddim_timestep_pairs(3)
    model = lambda x, t: (x, x)  # noqa: E731
    with pytest.raises(InputError, match="2 step noises"):
        ddim_sample_reference(model, torch.ones(1), pairs, cosine_alphas_cumprod(), torch.ones(1, 1))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        ddim_sample_reference(model, torch.ones(1), pairs, cosine_alphas_cumprod(), torch.ones(2, 1), eta=1.5)


def test_draw_step_noises_uses_the_reference_call_order() -> None:
    """One randn(shape) per stochastic step, as the reference's setup draws them (not one big tensor)."""
    step_noises = draw_step_noises(4, (1, 3, 5), torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    expected = [torch.randn((1, 3, 5), generator=gen) for _ in range(3)]
    assert step_noises.shape == (3, 1, 3, 5)
    assert torch.equal(step_noises, torch.stack(expected))
    assert draw_step_noises(1, (2,), torch.Generator()).shape == (0, 2)


@pytest.mark.parametrize("name", ["lmdm_ddim_sample_s10", "lmdm_ddim_sample_s50"])
def test_ddim_sample_matches_golden(det_init, load_golden, name: str, golden_kernels: bool) -> None:
    """The pipeline's path (make_plan + solve_window, as make_window_sampler runs it) with the golden's
    draws."""
    golden = load_golden(name)
    _, frames, motion_dim = golden["out"].shape
    model = LMDM(motion_dim=motion_dim, cond_dim=golden["aud_cond"].shape[-1], seq_frames=frames).eval()
    model.load_state_dict(det_init.fill_state_dict(model, int(golden["seed"]), skip=("rotary.freqs",)))
    steps = int(golden["sampling_timesteps"])
    pairs = ddim_timestep_pairs(steps)
    assert pairs == [tuple(p) for p in golden["time_pairs"].tolist()]
    alphas_cumprod = cosine_alphas_cumprod()
    np.testing.assert_array_equal(alphas_cumprod.numpy(), golden["alphas_cumprod"])
    np.testing.assert_array_equal(model.alphas_cumprod.numpy(), golden["alphas_cumprod"])
    # The reference's float32 formulas in its operand order: bit-identical on the golden machine's kernels;
    # elsewhere torch's vector sqrt rounds differently (measured: 1 ulp, and 4 for c where 1 - a - sigma^2
    # cancels most digits).
    coefficients = torch.tensor([ddim_step_coefficients(alphas_cumprod, t, tn) for t, tn in pairs[:-1]])
    for column, key in enumerate(("alpha_next_sqrt", "c", "sigma")):
        if golden_kernels:
            np.testing.assert_array_equal(coefficients[:, column].numpy(), golden[key], err_msg=key)
        else:
            np.testing.assert_array_max_ulp(
                coefficients[:, column].numpy(), golden[key], maxulp=4 if key == "c" else 1
            )

    draws = torch.from_numpy(golden["randn_draws"])  # S - 1 step noises, then x_T
    plan = make_plan(model, "ddim", steps, step_noises=draws[: steps - 1])
    assert plan.times.tolist() == [t for t, _ in pairs]
    kp_cond, aud_cond = torch.from_numpy(golden["kp_cond"]), torch.from_numpy(golden["aud_cond"])
    out = solve_window(model, plan, kp_cond, aud_cond, draws[steps - 1], guidance_scale=model.guidance_weight)
    # 4x the golden's fp64_maxabs_out (the reference's own float32 noise over the chain, 3.5e-5 to 5.8e-5):
    # measured 3.9e-5 (s10, 0.67x it) and 4.1e-5 (s50, 1.2x it), i.e. max rel 1.3e-6 / 1.4e-6.
    err, tol = max_abs_err(out, golden["out"]), 4.0 * float(golden["fp64_maxabs_out"])
    assert err <= tol, f"{name}: max abs err {err:.2e} > {tol:.2e}"


class ReplayNoise:
    """A noise source replaying recorded draws in order."""

    def __init__(self, draws: torch.Tensor) -> None:
        self.draws, self.device, self.used = draws, torch.device("cpu"), 0

    def randn(self, shape):
        draw = self.draws[self.used]
        assert tuple(draw.shape) == tuple(shape)
        self.used += 1
        return draw.clone()


@pytest.mark.parametrize("name", ["lmdm_ddim_sample_s10", "lmdm_ddim_sample_s50"])
def test_ddim_sample_in_reference_order_is_bit_exact(
    det_init, load_golden, name: str, golden_kernels
) -> None:
    """The pipeline's window sampler on the PyTorch runner with backend.lmdm_order=reference, drawing from
    the golden's recorded stream: the reference's output, bit for bit (on the golden machine's kernels)."""
    require_golden_kernels(golden_kernels)
    from ditto_research.backends.pytorch import TorchLmdm
    from ditto_research.diffusion.samplers import make_window_sampler

    golden = load_golden(name)
    _, frames, motion_dim = golden["out"].shape
    model = LMDM(motion_dim=motion_dim, cond_dim=golden["aud_cond"].shape[-1], seq_frames=frames).eval()
    model.load_state_dict(det_init.fill_state_dict(model, int(golden["seed"]), skip=("rotary.freqs",)))
    runner = TorchLmdm("lmdm", model)
    runner.order = "reference"
    steps = int(golden["sampling_timesteps"])
    noise = ReplayNoise(torch.from_numpy(golden["randn_draws"]))  # (S, 1, N, F): step noises, then x_T
    sampler = make_window_sampler(runner, "ddim", steps=steps, generator=noise)
    out = sampler(torch.from_numpy(golden["kp_cond"]), torch.from_numpy(golden["aud_cond"]))
    assert noise.used == steps
    np.testing.assert_array_equal(out.numpy(), golden["out"])
