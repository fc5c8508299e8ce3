"""Shared set-up of the pytest-benchmark micro-benchmarks (``pytest benchmarks/ --benchmark-only``).

They are not part of the default ``pytest`` run (``testpaths = ["tests"]``). Options:

    --bench-model untrained|tiny   full-size networks with random weights (default) or the narrow ones
    --bench-steps N                sampler steps of the motion-stage benchmark (default 10)
    --bench-rounds N               timed rounds per benchmark (default 5, after one warm-up round)

Compare two commits: ``--benchmark-save=NAME`` on each, then ``pytest-benchmark compare`` (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pytest_benchmark", reason="pip install pytest-benchmark (a dev dependency)")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ditto benchmarks")
    group.addoption(
        "--bench-model",
        default="untrained",
        choices=["untrained", "tiny"],
        help="networks to time: full size with random weights (default) or tiny",
    )
    group.addoption("--bench-steps", type=int, default=10, help="sampler steps of the motion benchmark")
    group.addoption("--bench-rounds", type=int, default=5, help="timed rounds per benchmark")


@dataclass
class Bench:
    """What the benchmarks share: the session (networks loaded), a registered source, speech, settings."""

    session: object
    source: object
    audio: np.ndarray
    rounds: int
    model: str


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Bench:
    from ditto_research.examples import example_source, synthetic_speech
    from ditto_research.pipeline import TalkingHeadSession

    model = request.config.getoption("--bench-model")
    steps = request.config.getoption("--bench-steps")
    session = TalkingHeadSession.from_overrides(
        [
            f"model={model}",
            "audio_encoder=untrained",
            "face=mediapipe",
            f"sampler.steps={steps}",
            "progress=false",
        ]
    )
    torch.set_grad_enabled(False)
    _ = session.networks, session.encoder
    source = session.register(example_source())
    yield Bench(session, source, synthetic_speech(2.0), request.config.getoption("--bench-rounds"), model)
    source.media.close()
    session.close()


@pytest.fixture
def run(benchmark, bench: Bench):
    """``run(fn, *args)``: time ``fn(*args)`` for ``--bench-rounds`` rounds after one warm-up round."""

    def _run(fn, *args):
        benchmark.extra_info["model"] = bench.model
        return benchmark.pedantic(fn, args=args, rounds=bench.rounds, iterations=1, warmup_rounds=1)

    return _run


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench_media")
