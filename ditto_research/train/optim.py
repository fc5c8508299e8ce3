"""The motion model's optimiser and learning-rate schedule.

:class:`Adan` is the released Ditto trainer's optimiser (``Adan(params, lr=1e-4, weight_decay=0.02)``, default
betas); :func:`make_scheduler` wraps :func:`lr_multiplier` (linear warmup, then cosine decay to a floor, or a
constant 1) in a ``LambdaLR`` stepped once per optimiser step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch

__all__ = ["SCHEDULES", "Adan", "lr_multiplier", "make_scheduler", "warmup_cosine"]

Schedule = Literal["cosine", "constant"]
SCHEDULES: tuple[str, ...] = ("cosine", "constant")


class Adan(torch.optim.Optimizer):
    """Adan (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep Models"),
    as the official implementation (sail-sg/Adan) computes it: zero-initialised moments with Adam-style bias
    correction, and ``g_0 := g_1`` so the first gradient difference is zero.

    ``betas`` are decay rates, the official code's convention: ``betas[i]`` is ``1 - beta_i`` of the paper's
    Algorithm 1. The defaults (0.98, 0.92, 0.99) are the paper's (0.02, 0.08, 0.01): the values Ditto's
    trainer gets from its own copy of the optimiser, which takes betas in the paper's convention. That copy
    also leaves the moments at zero on its first step (only the weight decay acts) and counts that step in
    the bias correction; this class does not.

    Notation (code: paper): ``grad``: g_k, ``prev_grad``: g_{k-1}, ``exp_avg``: m_k, ``exp_avg_diff``: v_k,
    ``exp_avg_sq``: n_k, ``lr``: eta, ``weight_decay``: lambda, ``b1, b2, b3`` (``betas``): 1 - beta_1,2,3.
    Step ``k`` (1-based, counted per parameter), per parameter:

    1. ``d = g_k - g_{k-1}`` (0 at k = 1);
    2. ``m = b1 m + (1 - b1) g``;  ``v = b2 v + (1 - b2) d``;  ``n = b3 n + (1 - b3) (g + b2 d)^2``;
    3. ``u = (m / (1 - b1^k) + b2 v / (1 - b2^k)) / (sqrt(n / (1 - b3^k)) + eps)``;
    4. ``theta = (theta - lr u) / (1 + lr lambda)`` (the paper's proximal decay; ``no_prox=False``), or
       ``theta = theta (1 - lr lambda) - lr u`` (decoupled decay as AdamW's; ``no_prox=True``).

    The state (per parameter: ``step``, the three moments, the previous gradient) goes through the standard
    ``state_dict()`` / ``load_state_dict()``, so a resumed run continues bit for bit. Gradients are not
    clipped here (the official ``max_grad_norm``): clip before ``step()``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        no_prox: bool = False,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "no_prox": no_prox}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after checking its hyperparameters (its own, else the defaults)."""
        _check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient; returns the closure's loss, if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("Adan does not support sparse gradients")
                self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        """Steps 1-4 of the class docstring for one parameter."""
        b1, b2, b3 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        grad = param.grad
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_diff"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["prev_grad"] = grad.clone(memory_format=torch.preserve_format)  # g_0 := g_1
        state["step"] += 1
        k = state["step"]
        m, v, n, prev_grad = state["exp_avg"], state["exp_avg_diff"], state["exp_avg_sq"], state["prev_grad"]

        diff = grad - prev_grad  # 1.
        m.mul_(b1).add_(grad, alpha=1 - b1)  # 2.
        v.mul_(b2).add_(diff, alpha=1 - b2)
        nesterov = diff.mul_(b2).add_(grad)  # g + b2 d, reusing diff's memory
        n.mul_(b3).addcmul_(nesterov, nesterov, value=1 - b3)

        denom = n.sqrt().div_(math.sqrt(1 - b3**k)).add_(group["eps"])  # 3.
        update = (m / (1 - b1**k)).add_(v, alpha=b2 / (1 - b2**k)).div_(denom)

        if group["no_prox"]:  # 4.
            param.mul_(1 - lr * weight_decay).add_(update, alpha=-lr)
        else:
            param.add_(update, alpha=-lr).div_(1 + lr * weight_decay)
        prev_grad.copy_(grad)


def _check_hyperparameters(group: dict[str, Any]) -> None:
    """Raise ValueError naming the first invalid hyperparameter of an Adan parameter group."""
    lr, eps, weight_decay, betas = group["lr"], group["eps"], group["weight_decay"], group["betas"]
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"Adan: lr={lr} is invalid; it must be a finite number >= 0")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"Adan: eps={eps} is invalid; it must be a finite number >= 0")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"Adan: weight_decay={weight_decay} is invalid; it must be a finite number >= 0")
    if len(betas) != 3 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"Adan: betas={tuple(betas)} is invalid; it must be three decay rates in [0, 1)")


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """The base lr's multiplier at optimiser step ``step`` (0-based): linear warmup, then cosine decay.

    Warmup: ``(step + 1) / warmup_steps`` for ``step < warmup_steps`` (1 / warmup_steps at step 0, 1 at step
    ``warmup_steps - 1``; none when ``warmup_steps`` is 0). Then a half cosine over
    ``[warmup_steps, total_steps]``, from 1 at ``warmup_steps`` to ``min_ratio`` at ``total_steps``; it is
    ``(1 + min_ratio) / 2`` halfway and ``min_ratio`` for every step from ``total_steps`` on.
    """
    _check_schedule_arguments(step, warmup_steps, total_steps, min_ratio)
    if total_steps < warmup_steps:
        raise ValueError(f"total_steps={total_steps} is smaller than warmup_steps={warmup_steps}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return min_ratio
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_multiplier(
    schedule: Schedule, step: int, warmup_steps: int, total_steps: int, min_ratio: float
) -> float:
    """The base lr's multiplier at step ``step`` for ``schedule``: "cosine" is :func:`warmup_cosine`,
    "constant" is the same linear warmup and then 1 (``total_steps`` and ``min_ratio`` are only checked)."""
    if schedule == "cosine":
        return warmup_cosine(step, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio)
    if schedule == "constant":
        _check_schedule_arguments(step, warmup_steps, total_steps, min_ratio)
        return (step + 1) / warmup_steps if step < warmup_steps else 1.0
    raise ValueError(f"schedule={schedule!r} is not valid; choose one of: {', '.join(SCHEDULES)}")


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    warmup_steps: int,
    total_steps: int,
    min_ratio: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_multiplier`; call its ``step()`` after each optimiser step.

    The arguments are checked here (at step 0), not at the first scheduler step. The optimiser's lr is
    multiplied by the step-0 value at once.
    """
    lr_multiplier(schedule, 0, warmup_steps, total_steps, min_ratio)
    multiplier = functools.partial(
        lr_multiplier, schedule, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def _check_schedule_arguments(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> None:
    """Raise ValueError naming the first invalid schedule argument."""
    for name, value in (("step", step), ("warmup_steps", warmup_steps), ("total_steps", total_steps)):
        if value < 0:
            raise ValueError(f"{name}={value} is invalid; it must be >= 0")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio={min_ratio} is invalid; it must be in [0, 1]")
