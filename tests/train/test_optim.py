"""Adan against an independent NumPy transcription of its equations, on a least-squares problem, across a
save/resume, and its weight decay; the warmup + cosine / constant learning-rate schedules."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from ditto_research.train.optim import Adan, lr_multiplier, make_scheduler, warmup_cosine


def numpy_adan(
    theta: np.ndarray,
    grads: list[np.ndarray],
    *,
    lr: float,
    betas: tuple[float, float, float],
    eps: float,
    weight_decay: float,
    no_prox: bool,
) -> list[np.ndarray]:
    """Adan in float64 NumPy, written from the paper's Algorithm 1 with the official code's zero-initialised,
    bias-corrected moments; returns theta after each step. Paper betas (weight of the newest term) are
    ``1 - betas`` here."""
    b1, b2, b3 = betas
    m = np.zeros_like(theta)  # first moment of g
    v = np.zeros_like(theta)  # first moment of the gradient difference g_k - g_{k-1}
    n = np.zeros_like(theta)  # second moment of the Nesterov gradient g_k + (1 - beta_2) (g_k - g_{k-1})
    g_prev = grads[0]  # g_0 := g_1: the first difference is zero
    thetas = []
    for k, g in enumerate(grads, start=1):
        d = g - g_prev
        m = (1 - b1) * g + b1 * m  # m_k = (1 - beta_1) m_{k-1} + beta_1 g_k  (paper's beta_1 = 1 - b1)
        v = (1 - b2) * d + b2 * v  # v_k = (1 - beta_2) v_{k-1} + beta_2 (g_k - g_{k-1})
        n = (1 - b3) * (g + b2 * d) ** 2 + b3 * n  # n_k = ... + beta_3 [g_k + (1 - beta_2)(g_k - g_{k-1})]^2
        m_hat = m / (1 - b1**k)  # bias corrections of the zero initialisation
        v_hat = v / (1 - b2**k)
        n_hat = n / (1 - b3**k)
        eta_k = lr / (np.sqrt(n_hat) + eps)  # eta_k = eta / (sqrt(n_k) + eps)
        step = eta_k * (m_hat + b2 * v_hat)  # eta_k o (m_k + (1 - beta_2) v_k)
        if no_prox:
            theta = theta * (1 - lr * weight_decay) - step  # decoupled decay of the previous iterate
        else:
            theta = (theta - step) / (
                1 + lr * weight_decay
            )  # theta_{k+1} = (1 + lambda eta)^-1 [theta_k - ...]
        g_prev = g
        thetas.append(theta)
    return thetas


@pytest.mark.parametrize("no_prox", [False, True])
@pytest.mark.parametrize("betas", [(0.98, 0.92, 0.99), (0.9, 0.5, 0.8)])
def test_adan_matches_numpy_transcription(no_prox: bool, betas: tuple[float, float, float]) -> None:
    rng = np.random.default_rng(0)
    theta0 = rng.normal(size=(3, 4))
    grads = [rng.normal(size=(3, 4)) for _ in range(3)]
    hyper = {"lr": 0.05, "betas": betas, "eps": 1e-8, "weight_decay": 0.1, "no_prox": no_prox}
    expected = numpy_adan(theta0, grads, **hyper)

    param = torch.nn.Parameter(torch.from_numpy(theta0.copy()))
    optimizer = Adan([param], **hyper)
    for g, want in zip(grads, expected):
        param.grad = torch.from_numpy(g.copy())
        optimizer.step()
        assert param.dtype == torch.float64
        np.testing.assert_allclose(param.detach().numpy(), want, rtol=1e-6, atol=0)
    assert optimizer.state[param]["step"] == 3
    # the gradients are left as they were given
    np.testing.assert_array_equal(param.grad.numpy(), grads[-1])


def test_adan_skips_parameters_without_gradient() -> None:
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = Adan([used, unused], lr=0.1, weight_decay=0.5)
    used.grad = torch.ones(2)
    optimizer.step()
    assert torch.equal(unused.detach(), torch.ones(2)) and len(optimizer.state[unused]) == 0
    assert not torch.equal(used.detach(), torch.ones(2))


def test_adan_minimises_least_squares() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    x_true = torch.randn(5, generator=gen, dtype=torch.float64)
    b = a @ x_true
    x = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    optimizer = Adan([x], lr=0.2)
    scheduler = make_scheduler(optimizer, "cosine", warmup_steps=10, total_steps=600, min_ratio=0.0)

    def loss() -> torch.Tensor:
        return ((a @ x - b) ** 2).mean()

    initial = loss().item()
    for _ in range(600):
        optimizer.zero_grad()
        with torch.enable_grad():  # tests/conftest.py turns autograd off
            loss().backward()
        optimizer.step()
        scheduler.step()
    assert loss().item() < 1e-12 * initial
    torch.testing.assert_close(x.detach(), x_true, rtol=0, atol=1e-5)


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _train(model, optimizer, scheduler, steps: range) -> None:
    for step in steps:
        gen = torch.Generator().manual_seed(step)  # the batch depends on the step only
        x, y = torch.randn(6, 4, generator=gen), torch.randn(6, 1, generator=gen)
        optimizer.zero_grad()
        with torch.enable_grad():
            ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
        scheduler.step()


def _setup(seed: int):
    model = _model(seed)
    optimizer = Adan(model.parameters(), lr=1e-2, weight_decay=0.02)
    return model, optimizer, make_scheduler(optimizer, "cosine", 3, 10, 0.1)


def test_adan_resume_is_bit_identical() -> None:
    model, optimizer, scheduler = _setup(seed=0)
    _train(model, optimizer, scheduler, range(10))

    model_a, optimizer_a, scheduler_a = _setup(seed=0)
    _train(model_a, optimizer_a, scheduler_a, range(5))
    buffer = io.BytesIO()
    state = {
        "model": model_a.state_dict(),
        "optim": optimizer_a.state_dict(),
        "sched": scheduler_a.state_dict(),
    }
    torch.save(state, buffer)
    _train(model_a, optimizer_a, scheduler_a, range(5, 7))  # the saved copy must not follow these

    model_b, optimizer_b, scheduler_b = _setup(seed=1)  # other weights: loading must set them
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model_b.load_state_dict(saved["model"])
    optimizer_b.load_state_dict(saved["optim"])
    scheduler_b.load_state_dict(saved["sched"])
    _train(model_b, optimizer_b, scheduler_b, range(5, 10))

    for p, q in zip(model.parameters(), model_b.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(model.parameters(), model_b.parameters()):
        s, t = optimizer.state[p], optimizer_b.state[q]
        assert s.keys() == t.keys() and s["step"] == t["step"] == 10
        for key in ("exp_avg", "exp_avg_diff", "exp_avg_sq", "prev_grad"):
            assert torch.equal(s[key], t[key]), key
    assert optimizer.param_groups[0]["lr"] == optimizer_b.param_groups[0]["lr"]


def test_adan_weight_decay_forms() -> None:
    theta0 = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    grad = torch.tensor([0.5, 0.1, -0.3], dtype=torch.float64)
    lr, wd = 0.1, 0.5

    def one_step(weight_decay: float, no_prox: bool, g: torch.Tensor) -> torch.Tensor:
        param = torch.nn.Parameter(theta0.clone())
        param.grad = g.clone()
        Adan([param], lr=lr, weight_decay=weight_decay, no_prox=no_prox).step()
        return param.detach()

    # a zero gradient gives a zero update: only the decay acts, theta times 1/(1 + lr wd) or (1 - lr wd)
    zero = torch.zeros(3, dtype=torch.float64)
    torch.testing.assert_close(one_step(wd, False, zero), theta0 / (1 + lr * wd), rtol=1e-15, atol=0)
    torch.testing.assert_close(one_step(wd, True, zero), theta0 * (1 - lr * wd), rtol=1e-15, atol=0)

    # with a gradient: the proximal form decays the updated point, the decoupled form the previous one
    delta = one_step(0.0, False, grad) - theta0  # -lr u, the same for both forms without decay
    assert torch.equal(one_step(0.0, True, grad) - theta0, delta)
    torch.testing.assert_close(
        one_step(wd, False, grad), (theta0 + delta) / (1 + lr * wd), rtol=1e-14, atol=0
    )
    torch.testing.assert_close(one_step(wd, True, grad), theta0 * (1 - lr * wd) + delta, rtol=1e-14, atol=0)
    assert not torch.allclose(one_step(wd, False, grad), one_step(wd, True, grad))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -1e-3}, "lr=-0.001"),
        ({"lr": math.nan}, "lr=nan"),
        ({"eps": -1e-8}, "eps=-1e-08"),
        ({"weight_decay": -0.02}, "weight_decay=-0.02"),
        ({"betas": (1.0, 0.92, 0.99)}, r"betas=\(1.0, 0.92, 0.99\)"),
        ({"betas": (0.98, -0.1, 0.99)}, r"betas=\(0.98, -0.1, 0.99\)"),
        ({"betas": (0.98, 0.92)}, r"betas=\(0.98, 0.92\)"),
    ],
)
def test_adan_rejects_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Adan([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_adan_checks_added_groups() -> None:
    optimizer = Adan([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="lr=-1"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": -1})
    assert len(optimizer.param_groups) == 1


def test_warmup_cosine_boundaries() -> None:
    kw = {"warmup_steps": 10, "total_steps": 110, "min_ratio": 0.2}
    assert warmup_cosine(0, **kw) == pytest.approx(0.1)  # (0 + 1) / warmup_steps
    assert warmup_cosine(4, **kw) == pytest.approx(0.5)
    assert warmup_cosine(9, **kw) == 1.0  # warmup ends at warmup_steps - 1
    assert warmup_cosine(10, **kw) == 1.0  # the cosine starts at 1
    assert warmup_cosine(60, **kw) == pytest.approx((1 + 0.2) / 2)  # halfway through [10, 110]
    assert warmup_cosine(109, **kw) == pytest.approx(0.2, abs=1e-3)
    assert warmup_cosine(110, **kw) == 0.2
    assert warmup_cosine(10_000, **kw) == 0.2


def test_warmup_cosine_without_warmup() -> None:
    kw = {"warmup_steps": 0, "total_steps": 100, "min_ratio": 0.0}
    assert warmup_cosine(0, **kw) == 1.0
    assert warmup_cosine(50, **kw) == pytest.approx(0.5)
    assert warmup_cosine(100, **kw) == 0.0


def test_warmup_cosine_is_monotonic() -> None:
    kw = {"warmup_steps": 7, "total_steps": 50, "min_ratio": 0.05}
    values = np.array([warmup_cosine(s, **kw) for s in range(60)])
    assert np.all(np.diff(values[:7]) > 0)  # strictly up during warmup
    assert np.all(np.diff(values[7:]) <= 0)  # never up afterwards
    assert values.min() == 0.05 and values.max() == 1.0


def test_constant_schedule() -> None:
    values = [lr_multiplier("constant", s, 4, 20, 0.1) for s in range(30)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4:] == [1.0] * 26
    assert lr_multiplier("constant", 0, 0, 0, 0.0) == 1.0
    assert lr_multiplier("cosine", 15, 4, 20, 0.1) == warmup_cosine(
        15, warmup_steps=4, total_steps=20, min_ratio=0.1
    )


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_make_scheduler_applies_multiplier(schedule: str) -> None:
    optimizer = Adan([torch.nn.Parameter(torch.zeros(2))], lr=2.0)
    scheduler = make_scheduler(optimizer, schedule, warmup_steps=3, total_steps=12, min_ratio=0.25)
    for step in range(15):
        want = 2.0 * lr_multiplier(schedule, step, 3, 12, 0.25)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(want, rel=1e-12)
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("cosine", -1, 10, 100, 0.1), "step=-1"),
        (("cosine", 0, -10, 100, 0.1), "warmup_steps=-10"),
        (("cosine", 0, 10, -100, 0.1), "total_steps=-100"),
        (("cosine", 0, 10, 5, 0.1), "total_steps=5"),
        (("cosine", 0, 10, 100, 1.5), "min_ratio=1.5"),
        (("constant", 0, 10, 100, -0.1), "min_ratio=-0.1"),
        (("linear", 0, 10, 100, 0.1), "schedule='linear'.*cosine, constant"),
    ],
)
def test_schedule_rejects_bad_arguments(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        lr_multiplier(*args)
    optimizer = Adan([torch.nn.Parameter(torch.zeros(2))])
    if args[1] == 0:  # make_scheduler checks at construction
        with pytest.raises(ValueError, match=match):
            make_scheduler(optimizer, args[0], *args[2:])
