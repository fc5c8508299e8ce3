"""Pluggable samplers: one contract over every sampler, ddim's reference exactness, guidance, config
errors."""

from __future__ import annotations

import pytest
import torch

from ditto_research.config import CONF_DIR, compose, to_config
from ditto_research.config.schema import SAMPLER_NAMES
from ditto_research.diffusion.ddim import ddim_sample_reference, draw_step_noises
from ditto_research.diffusion.samplers import (
    SAMPLERS,
    SamplingPlan,
    check_sampler_options,
    make_plan,
    make_window_sampler,
    solve_window,
)
from ditto_research.diffusion.schedule import ddim_timestep_pairs
from ditto_research.errors import ConfigError
from ditto_research.models.lmdm import LMDM
from tests.helpers import max_rel_err

FRAMES, MOTION, COND = 80, 265, 24


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny networks run hundreds of small ops; on a shared 2-core machine a second thread only waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> LMDM:
    torch.manual_seed(0)
    return LMDM(
        motion_dim=MOTION,
        cond_dim=COND,
        seq_frames=FRAMES,
        latent_dim=64,
        ff_size=128,
        num_layers=2,
        num_heads=4,
    ).eval()


@pytest.fixture(scope="module")
def window() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kp_cond (1, F), cond (1, N, C), x_T (1, N, F))."""
    gen = torch.Generator().manual_seed(11)
    return (
        torch.randn(1, MOTION, generator=gen),
        torch.randn(1, FRAMES, COND, generator=gen),
        torch.randn(1, FRAMES, MOTION, generator=gen),
    )


def deterministic_ddim(model: LMDM, steps: int) -> SamplingPlan:
    return make_plan(model, "ddim", steps, eta=0.0, step_noises=torch.zeros(steps - 1, 1, FRAMES, MOTION))


@pytest.fixture(scope="module")
def converged(tiny: LMDM, window) -> torch.Tensor:
    """The same window solved with 250-step deterministic DDIM."""
    kp_cond, cond, x_T = window
    return solve_window(tiny, deterministic_ddim(tiny, 250), kp_cond, cond, x_T)


def test_registry_matches_the_config_group() -> None:
    assert set(SAMPLERS) == set(SAMPLER_NAMES)
    assert tuple(SAMPLERS) == SAMPLER_NAMES  # registered in the table's order
    for name in SAMPLERS:
        assert (CONF_DIR / "sampler" / f"{name}.yaml").is_file(), name


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_contract(tiny: LMDM, window, converged: torch.Tensor, name: str) -> None:
    """Shape, finite output, reproducible from the seed, and closer to the converged solution with more
    steps."""
    kp_cond, cond, x_T = window

    def run(seed: int) -> list[torch.Tensor]:
        sampler = make_window_sampler(tiny, name, steps=6, generator=torch.Generator().manual_seed(seed))
        return [sampler(kp_cond, cond), sampler(kp_cond, cond)]

    first, again, other = run(5), run(5), run(6)
    assert first[0].shape == (1, FRAMES, MOTION)
    assert all(bool(out.isfinite().all()) for out in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.allclose(first[0], other[0]) and not torch.allclose(first[0], first[1])

    kw = {"eta": 0.0, "step_noises": torch.zeros(24, 1, FRAMES, MOTION)} if name == "ddim" else {}
    errors = [
        max_rel_err(
            solve_window(tiny, make_plan(tiny, name, steps, **kw), kp_cond, cond, x_T), converged.numpy()
        )
        for steps in (4, 25)
    ]
    assert errors[1] < errors[0], f"{name}: error at 4 / 25 steps {errors}"


def test_ddim_window_sampler_keeps_the_reference_draw_order(tiny: LMDM, window) -> None:
    """Step noises first (once per run), then one x_T per window; the same numbers as the unfused sampler.

    The golden parity of this path is tests/diffusion/test_ddim.py::test_ddim_sample_matches_golden.
    """
    kp_cond, cond, _ = window
    steps, shape = 5, (1, FRAMES, MOTION)
    sampler = make_window_sampler(tiny, "ddim", steps=steps, generator=torch.Generator().manual_seed(9))
    outputs = [sampler(kp_cond, cond) for _ in range(3)]

    gen = torch.Generator().manual_seed(9)
    step_noises = draw_step_noises(steps, shape, gen)
    x_Ts = [torch.randn(shape, generator=gen) for _ in range(3)]
    pairs = ddim_timestep_pairs(steps)
    denoise = tiny.guided_denoiser(kp_cond, cond)  # no time grid: every step prepared on its own, guidance 2

    def model_fn(x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        times = torch.full((x.shape[0],), t, dtype=torch.long)
        x_start = denoise(x, times)
        return tiny.predict_noise_from_start(x, times, x_start), x_start

    for out, x_T in zip(outputs, x_Ts, strict=True):
        ref = ddim_sample_reference(model_fn, x_T, pairs, tiny.alphas_cumprod, step_noises)
        # The grid's batched time conditioning rounds differently: measured max 1.8e-6 on |x| ~ 2.5.
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)


def test_euler_equals_deterministic_ddim_on_a_shared_grid(tiny: LMDM, window) -> None:
    """Deterministic DDIM is Euler's method on x / sqrt(alpha-bar) (Karras et al. 2022); with 1000 / S
    integral both grids are 999, 899, ..., 99: an independent check of the diffusers wiring."""
    kp_cond, cond, x_T = window
    euler = solve_window(tiny, make_plan(tiny, "euler", 10), kp_cond, cond, x_T)
    ddim = solve_window(tiny, deterministic_ddim(tiny, 10), kp_cond, cond, x_T)
    assert max_rel_err(euler, ddim.numpy()) < 1e-4


@pytest.mark.parametrize("name", ["ddim", "heun"])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_guidance_one_runs_one_branch_per_evaluation(
    tiny: LMDM, window, monkeypatch: pytest.MonkeyPatch, name: str, guidance: float
) -> None:
    kp_cond, cond, x_T = window
    plan = make_plan(tiny, name, 4, generator=torch.Generator().manual_seed(0))
    rows: list[int] = []
    decode = tiny.decode_prepared

    def counting_decode(*args, **kwargs) -> torch.Tensor:
        out = decode(*args, **kwargs)
        rows.append(out.shape[0])
        return out

    monkeypatch.setattr(tiny, "decode_prepared", counting_decode)
    solve_window(tiny, plan, kp_cond, cond, x_T, guidance_scale=guidance)
    assert len(rows) == plan.evaluations == (7 if name == "heun" else 4)
    assert set(rows) == {1 if guidance == 1.0 else 2}


def test_guidance_one_is_the_conditional_branch(tiny: LMDM, window) -> None:
    kp_cond, cond, x_T = window
    t = torch.tensor([500])
    alone = tiny.guided_denoiser(kp_cond, cond, 1.0)(x_T, t)
    torch.testing.assert_close(
        alone, tiny.denoise(x_T, kp_cond, cond, t, cond_drop_prob=0), rtol=1e-5, atol=1e-6
    )
    assert not torch.allclose(alone, tiny.guided_denoiser(kp_cond, cond, 2.0)(x_T, t))


def test_every_sampler_option_composes_and_builds(tiny: LMDM) -> None:
    for path in sorted((CONF_DIR / "sampler").glob("*.yaml")):
        cfg = to_config(compose("infer", [f"sampler={path.stem}", "sampler.steps=3"])).sampler
        sampler = make_window_sampler(
            tiny,
            cfg.name,
            steps=cfg.steps,
            eta=cfg.eta,
            guidance_scale=cfg.guidance_scale,
            generator=torch.Generator().manual_seed(0),
        )
        assert sampler.plan.steps == 3, path.stem
    assert to_config(compose("infer", ["sampler=ddim"])).sampler.eta == 1.0
    assert to_config(compose("infer", ["sampler=ddim", "sampler.eta=0"])).sampler.eta == 0.0
    assert to_config(compose("infer", ["sampler=unipc"])).sampler.eta is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sampler.name=plms"], "choose one of: ddim, dpmpp_2m, unipc, euler, heun"),
        (["sampler.steps=0"], r"\[1, 1000\]"),
        (["sampler.steps=1001"], r"\[1, 1000\]"),
        (["sampler.guidance_scale=-0.5"], r"\[0.0, inf\]"),
        (
            ["sampler=dpmpp_2m", "sampler.eta=0.5"],
            r"name, steps, guidance_scale \(eta is an option of sampler=ddim",
        ),
        (["sampler=unipc", "+sampler.eta=0.5"], "sampler.eta is not a key of sampler=unipc"),
        (["sampler=ddim", "sampler.eta=1.5"], r"\[0.0, 1.0\]"),
    ],
)
def test_bad_sampler_options_fail_at_config_validation(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        to_config(compose("infer", overrides))


def test_unknown_sampler_group_option_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match="ddim, dpmpp_2m, euler, heun, unipc") as info:
        compose("infer", ["sampler=plms"])
    assert "Could not find 'sampler/plms'" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("plms", 10, None, 2.0), "choose one of"),
        (("unipc", 0, None, 2.0), r"\[1, 1000\]"),
        (("heun", 10, 0.0, 2.0), "only ddim takes eta"),
        (("ddim", 10, None, -1.0), "guidance_scale"),
    ],
)
def test_programmatic_api_validates_too(args: tuple, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_sampler_options(*args)


def test_benchmark_baseline_equals_the_fast_path(tiny: LMDM, window) -> None:
    """The benchmark's "original structure" (two separate passes per step) gives our output (<= 1e-5)."""
    from ditto_research.diffusion.reference import Window, original_structure_ddim, relative_errors

    kp_cond, cond, x_T = window
    steps = 8
    noises = torch.randn(steps - 1, 1, FRAMES, MOTION, generator=torch.Generator().manual_seed(4))
    original = original_structure_ddim(tiny, Window(kp_cond, cond, x_T, noises), steps)
    ours = solve_window(tiny, make_plan(tiny, "ddim", steps, step_noises=noises), kp_cond, cond, x_T, 2.0)
    assert relative_errors(ours, original)[0] <= 1e-5
