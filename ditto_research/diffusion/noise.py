"""Where a run's Gaussian draws come from: one stream per run, consumed in the reference's order.

A sampler asks its noise source for every draw (ddim: its S - 1 step noises first, then every sampler one
x_T per window), so the whole run is a function of the stream. Two streams exist, both seeded by
``control.seed`` (``control.noise`` picks one):

==========  ===========================================================================================
``torch``   ``torch.randn(shape, generator=torch.Generator(device).manual_seed(seed))`` (the default;
            the reference's PyTorch path draws with ``torch.randn`` after ``torch.manual_seed``).
``numpy``   ``np.random.RandomState(seed).standard_normal(shape)`` cast to float32 (the reference's
            ONNX / TensorRT path draws ``np.random.randn`` after ``np.random.seed(seed)``: same numbers).
==========  ===========================================================================================

Any object with ``randn(shape) -> Tensor`` and a ``device`` is a source, so a recorded stream can be
replayed exactly (the end-to-end golden draws every ``torch.randn`` of the reference from one
``RandomState``: ``NumpyNoise(np.random.RandomState([seed, crc]))`` reproduces it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ditto_research.choices import NOISE_KINDS, NoiseKind, check_choice

__all__ = [
    "NOISE_KINDS",
    "NoiseKind",
    "NoiseSource",
    "NumpyNoise",
    "TorchNoise",
    "as_noise_source",
    "make_noise",
]


@runtime_checkable
class NoiseSource(Protocol):
    """A stream of standard-normal float32 tensors on ``device``."""

    device: torch.device

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        """The next draw, shaped ``shape``."""
        ...


class TorchNoise:
    """``torch.randn`` from an explicit generator (on the generator's device)."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.device = torch.device(generator.device)
        self.draws = 0

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        self.draws += 1
        return torch.randn(tuple(shape), generator=self.generator, device=self.device)


class NumpyNoise:
    """Legacy NumPy ``RandomState.standard_normal`` draws (= ``np.random.randn``), float32 on ``device``."""

    def __init__(self, state: np.random.RandomState, device: torch.device | str = "cpu") -> None:
        self.state = state
        self.device = torch.device(device)
        self.draws = 0

    def randn(self, shape: Sequence[int]) -> torch.Tensor:
        self.draws += 1
        draw = self.state.standard_normal(tuple(shape)).astype(np.float32)
        return torch.from_numpy(draw).to(self.device)


def make_noise(kind: str, seed: int, device: torch.device | str = "cpu") -> NoiseSource:
    """The ``control.noise`` stream ``kind`` seeded with ``seed``."""
    check_choice("control.noise", kind, NOISE_KINDS)
    if kind == "torch":
        return TorchNoise(torch.Generator(device=str(device)).manual_seed(int(seed)))
    return NumpyNoise(np.random.RandomState(int(seed)), device)


def as_noise_source(noise: NoiseSource | torch.Generator) -> NoiseSource:
    """A noise source; a bare ``torch.Generator`` becomes :class:`TorchNoise`."""
    return TorchNoise(noise) if isinstance(noise, torch.Generator) else noise
