"""The random streams of one run, made fresh for every run so that two runs of the same inputs agree.

Two streams, as in the reference (which draws from torch's and Python's global generators):

- ``noise``: every Gaussian draw of the diffusion sampler (:mod:`ditto_research.diffusion.noise`), from
  ``control.seed`` with ``control.noise`` (torch or numpy);
- ``blink``: the random gaps of the blink schedule (``control.delta_eye_open_n=0``), a ``random.Random``
  from ``control.seed`` (the reference: Python's ``random`` after ``random.seed(seed)``).

An :class:`~ditto_research.pipeline.engine.Engine` takes a ``randomness`` factory to replace both, e.g. to
replay a recorded stream::

    Engine(cfg, randomness=lambda: RunRandomness(NumpyNoise(np.random.RandomState([0, 1])), random.Random(7)))
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ditto_research.config.schema import ControlConfig
from ditto_research.diffusion.noise import NoiseSource, make_noise

__all__ = ["RandomnessFactory", "RunRandomness", "default_randomness"]


@dataclass
class RunRandomness:
    """The random streams of one run (see the module docstring)."""

    noise: NoiseSource
    blink: random.Random


RandomnessFactory = Callable[[], RunRandomness]
"""Called once per run (offline clip, stream, or a direct motion / stitcher request)."""


def default_randomness(control: ControlConfig, device: torch.device | str) -> RunRandomness:
    """The streams ``control.seed`` / ``control.noise`` describe."""
    return RunRandomness(make_noise(control.noise, control.seed, device), random.Random(control.seed))
