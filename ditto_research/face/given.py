"""``face=given``: the official chain's crop logic on recorded model answers (:mod:`.landmark_file`).

Nothing is detected: each of the chain's four model calls returns the file's entry for that source frame,
and the crops, box choice and tracking are :class:`~ditto_research.face.chain.LandmarkChain`'s, the code
``face=official`` runs. Uses: landmarks from another detector or a hand annotation, a crop pinned across a
sweep, and the end-to-end parity test (the reference's injected face-model calls).

``record_inputs=True`` keeps what each model call was given, per source frame (``inputs[i]``: ``box106``,
``crop224``, ``crop224_M_c2o``, ``crop512``), to inspect the crops the official models would have seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ditto_research.face.chain import LandmarkChain
from ditto_research.face.crop import WarpBackend
from ditto_research.face.frontend import check_rgb
from ditto_research.face.landmark_file import GivenLandmarks

__all__ = ["GivenFrontend"]


class GivenFrontend(LandmarkChain):
    """The official chain answered from a :class:`GivenLandmarks` file.

    Args:
        landmarks: the file (path or loaded).
        min_face_size: smaller chosen boxes raise InputError, as with the official detector.
        warp_backend: the chain's crop warp ("exact": OpenCV 5.0's bilinear warp bit for bit).
        record_inputs: keep each call's inputs in ``inputs`` (see the module docstring).
        select: which detector box when there are several (largest, as the original; center; i-th from
            the left).
    """

    def __init__(
        self,
        landmarks: GivenLandmarks | str | Path,
        *,
        min_face_size: int = 0,
        warp_backend: WarpBackend = "exact",
        record_inputs: bool = False,
        select: str | int = "largest",
        reject_unusable: bool = False,
    ) -> None:
        self.landmarks = (
            landmarks if isinstance(landmarks, GivenLandmarks) else GivenLandmarks.load(landmarks)
        )
        self.min_face_size = min_face_size
        self.warp_backend = warp_backend
        self.record_inputs = record_inputs
        self.reject_unusable = reject_unusable
        self.select = select
        self.inputs: dict[int, dict[str, np.ndarray]] = {}

    def _record(self, index: int, **arrays: np.ndarray) -> None:
        if self.record_inputs:
            self.inputs.setdefault(index, {}).update({k: np.array(v, copy=True) for k, v in arrays.items()})

    def detect(self, rgb: np.ndarray, *, index: int = 0) -> np.ndarray:
        return self.landmarks.det_boxes.copy()

    def landmarks106(self, rgb: np.ndarray, box: np.ndarray, *, index: int = 0) -> np.ndarray:
        self._record(index, box106=np.asarray(box, np.float32))
        return self.landmarks.lmk106.copy()

    def run_landmark203(self, crop224: np.ndarray, M_c2o: np.ndarray, *, index: int = 0) -> np.ndarray:
        self.landmarks.check_frame(index)
        self._record(index, crop224=crop224, crop224_M_c2o=M_c2o)
        return self.landmarks.lmk203[index].copy()

    def landmarks478(
        self, crop_rgb: np.ndarray, *, what: str = "the face crop", index: int = 0
    ) -> np.ndarray:
        crop_rgb = check_rgb(crop_rgb, what)
        self.landmarks.check_frame(index)
        self._record(index, crop512=crop_rgb)
        return self.landmarks.lmk478[index].copy()

    def close(self) -> None:
        self.inputs.clear()
