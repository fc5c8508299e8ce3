"""Shared fixtures: golden reference data and the deterministic weight fill that produced it.

The golden folder is ``../shared/golden`` next to the repository (override with ``DITTO_GOLDEN_DIR``).
Parity tests skip with a clear reason when it is absent, so the suite still runs on a bare clone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Resolve face=mediapipe's model folder once (fetched into the user's cache on first use) and hand it to
    every test through DITTO_FACE_MODELS, so tests that point DITTO_CACHE_DIR at a temporary folder (and the
    subprocesses they start) do not fetch the models again."""
    if os.environ.get("DITTO_FACE_MODELS"):
        return
    from ditto_research.errors import DittoError
    from ditto_research.face.tflite_models import FACE_MODELS_ENV, face_models_dir

    try:
        os.environ[FACE_MODELS_ENV] = str(face_models_dir())
    except DittoError as e:  # offline and not cached: the face=mediapipe tests fail with this line, not all
        print(f"\nwarning: {e}", file=sys.stderr)


def golden_root() -> Path:
    env = os.environ.get("DITTO_GOLDEN_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    root = golden_root()
    if not (root / "det_init.py").is_file():
        pytest.skip(f"golden data not found at {root} (set DITTO_GOLDEN_DIR to the shared/golden folder)")
    return root


@pytest.fixture(scope="session")
def det_init(golden_dir: Path) -> ModuleType:
    """The reference ``det_init`` module (``fill_state_dict(module, seed, skip=())``)."""
    spec = importlib.util.spec_from_file_location("det_init", golden_dir / "det_init.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_golden(golden_dir: Path):
    """``load_golden("decoder")`` -> dict of numpy arrays from ``decoder.npz``."""

    def _load(name: str) -> dict[str, np.ndarray]:
        path = golden_dir / f"{name}.npz"
        if not path.is_file():
            pytest.skip(f"golden file {path} not present")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    return _load


@pytest.fixture(scope="session")
def golden_kernels(det_init: ModuleType, load_golden) -> bool:
    """Whether this host's float32 kernels are those of the machine that made the goldens.

    Bit-exactness against the goldens is a property of the kernels as much as of our code: Intel MKL picks
    its code path by CPU (the goldens match its SSE4.2-level path, e.g. on AMD hosts; on an AVX-512 Xeon it
    takes another, whose matmul sums in another order and whose vector sqrt rounds differently). The probe is
    the stitching MLP on its golden input (a few matmuls): equal bit for bit, or not. Exact tests require it
    (:func:`require_golden_kernels`); the tolerance-based parity tests run everywhere.
    """
    from ditto_research.models.stitching import StitchingNetwork

    golden = load_golden("stitch_network")
    model = StitchingNetwork().eval()
    model.load_state_dict(det_init.fill_state_dict(model, int(golden["seed"])), strict=True)
    with torch.no_grad():
        return all(
            np.array_equal(
                model(
                    torch.from_numpy(golden["kp_source"][i]), torch.from_numpy(golden["kp_driving"][i])
                ).numpy(),
                golden["kp_driving_new"][i],
            )
            for i in range(golden["kp_source"].shape[0])
        )


def require_golden_kernels(golden_kernels: bool) -> None:
    """Skip a bit-exactness test on a host whose float32 kernels differ from the golden machine's."""
    if not golden_kernels:
        pytest.skip(
            "bit-exactness needs the golden machine's float32 kernels; this host's MKL takes another code "
            "path (the stitching probe differs), so only the tolerance-based parity tests apply here"
        )


@pytest.fixture(autouse=True)
def _torch_determinism():
    """Parity is defined for float32 CPU with 2 threads; keep tests from inheriting odd global state."""
    torch.set_grad_enabled(False)
    yield
    torch.set_grad_enabled(True)
