"""Seeded random weights for the `untrained` and `tiny` models (benchmarks and tests, no checkpoint).

The rule follows the golden ``det_init.fill_state_dict`` so random networks behave like trained ones
numerically (activations stay O(1), the SPADE spectral norm is well conditioned), but draws from a
``torch.Generator`` so a full-size fill takes well under a second:

    ndim >= 2                          N / sqrt(fan_in)
    1-d "*.weight" (norm scales)       1 + 0.1 N
    "*running_var"                     1 + 0.1 |N|
    "*weight_u" / "*weight_v"          N / ||N||, then u <- normalize(W v) so sigma = |W v| > 0
    other float tensors                0.1 N
    integer buffers                    0
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def init_random_(module: nn.Module, seed: int, skip: tuple[str, ...] = ("rotary.freqs",)) -> nn.Module:
    """Fill every parameter and buffer of ``module`` in place from ``seed``; keys ending in ``skip`` are
    kept."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    state = module.state_dict(keep_vars=True)
    for key in sorted(state):
        tensor = state[key]
        if key.endswith(skip):
            continue
        if not tensor.is_floating_point():
            tensor.zero_()
            continue
        noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float32)
        if key.endswith(("weight_u", "weight_v")):
            value = noise / noise.norm().clamp_min(1e-12)
        elif key.endswith("running_var"):
            value = 1.0 + 0.1 * noise.abs()
        elif tensor.dim() >= 2:
            value = noise / math.sqrt(math.prod(tensor.shape[1:]))
        elif tensor.dim() == 1 and key.endswith("weight"):
            value = 1.0 + 0.1 * noise
        else:
            value = 0.1 * noise
        tensor.copy_(value.to(tensor.dtype))
    for key in sorted(state):
        prefix = key[: -len("weight_u")]
        if key.endswith("weight_u") and prefix + "weight_orig" in state and prefix + "weight_v" in state:
            weight = state[prefix + "weight_orig"].double()
            u = weight.reshape(weight.shape[0], -1) @ state[prefix + "weight_v"].double()
            state[key].copy_((u / u.norm().clamp_min(1e-12)).to(state[key].dtype))
    # Modules that cache derived weights (e.g. the spectral-normed convs) recompute them on the next load.
    module.load_state_dict(module.state_dict(), strict=True)
    return module
