"""Recorded answers of the official face models, for ``face=given face.landmarks=FILE.npz``.

The official chain (:mod:`ditto_research.face.chain`) asks four models per source frame; this file gives
their answers instead, so the same crop logic runs on landmarks computed elsewhere (another detector, a
manual annotation, a reference run). Arrays of the ``.npz``, float, finite, in image pixels of the source
*after* its resize to ``face.max_size`` (the frames the pipeline sees):

===========  ===================================  ==========================================================
key          shape                                what
===========  ===================================  ==========================================================
det_boxes    (F, 5) or (F, 4)                     the detector on the first frame: x1, y1, x2, y2[, score];
                                                  the largest box is used (F >= 1)
det_kps      (F, 5, 2), optional                  its 5 keypoints (not used by the crop; checked if given)
lmk106       (106, 2)                             2d106det on the first frame, in the chosen box
lmk203       (203, 2) or (T, 203, 2)              landmark203 per source frame (later frames are tracked
                                                  from the previous frame's 203 points, as the reference)
lmk478       (1, 478, 3), (T, 478, 3) or          FaceLandmarker on each frame's 512 crop, normalised to
             (T, 1, 478, 3)                       the crop (x / 512, y / 512, z)
===========  ===================================  ==========================================================

An image source needs T = 1; a video needs T >= its frame count (``face.template_n_frames`` if set).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ditto_research.errors import InputError

__all__ = ["LANDMARK_FILE_KEYS", "GivenLandmarks"]

LANDMARK_FILE_KEYS = ("det_boxes", "det_kps", "lmk106", "lmk203", "lmk478")


def _bad(path: Path, key: str, problem: str, expected: str) -> InputError:
    return InputError(f"face.landmarks={path}: {key} {problem}; expected {expected}")


def _array(data: dict[str, np.ndarray], path: Path, key: str, expected: str) -> np.ndarray:
    if key not in data:
        raise _bad(path, key, "is missing", f"an array '{key}' of shape {expected}")
    value = data[key]
    if value.dtype.kind not in "fiu":
        raise _bad(path, key, f"is a {value.dtype} array", f"numbers of shape {expected}")
    value = value.astype(np.float32)
    if not np.isfinite(value).all():
        raise _bad(path, key, "holds NaN or infinite values", f"finite pixels of shape {expected}")
    return value


@dataclass(frozen=True)
class GivenLandmarks:
    """The checked contents of a landmark file (see the module docstring); every array float32, read-only."""

    path: Path
    det_boxes: np.ndarray  # (F, 5)
    lmk106: np.ndarray  # (106, 2)
    lmk203: np.ndarray  # (T, 203, 2)
    lmk478: np.ndarray  # (T, 1, 478, 3)
    det_kps: np.ndarray | None = None  # (F, 5, 2)

    @property
    def num_frames(self) -> int:
        """T: source frames the file covers."""
        return int(self.lmk203.shape[0])

    @classmethod
    def load(cls, path: str | Path) -> GivenLandmarks:
        """Read and check ``path``; InputError naming the file, the key and the expected shape."""
        path = Path(path)
        if not path.is_file():
            raise InputError(
                f"face.landmarks={path} does not exist; give an .npz with {', '.join(LANDMARK_FILE_KEYS)}"
            )
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {key: npz[key] for key in npz.files}
        except (OSError, ValueError) as e:
            raise InputError(f"face.landmarks={path} is not a readable .npz ({e})") from e

        boxes = _array(data, path, "det_boxes", "(F, 5) x1, y1, x2, y2, score")
        if boxes.ndim != 2 or boxes.shape[1] not in (4, 5) or len(boxes) == 0:
            raise _bad(path, "det_boxes", f"has shape {boxes.shape}", "(F, 5) with F >= 1 faces")
        if boxes.shape[1] == 4:
            boxes = np.concatenate([boxes, np.ones((len(boxes), 1), np.float32)], axis=1)
        if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
            raise _bad(path, "det_boxes", "has a box with x2 <= x1 or y2 <= y1", "x1 < x2 and y1 < y2")
        kps = None
        if "det_kps" in data:
            kps = _array(data, path, "det_kps", f"({len(boxes)}, 5, 2)")
            if kps.shape != (len(boxes), 5, 2):
                raise _bad(path, "det_kps", f"has shape {kps.shape}", f"({len(boxes)}, 5, 2)")

        lmk106 = _array(data, path, "lmk106", "(106, 2)")
        if lmk106.shape != (106, 2):
            raise _bad(path, "lmk106", f"has shape {lmk106.shape}", "(106, 2)")

        lmk203 = _array(data, path, "lmk203", "(T, 203, 2)")
        if lmk203.shape == (203, 2):
            lmk203 = lmk203[None]
        if lmk203.ndim != 3 or lmk203.shape[1:] != (203, 2) or len(lmk203) == 0:
            raise _bad(path, "lmk203", f"has shape {lmk203.shape}", "(203, 2) or (T, 203, 2)")

        lmk478 = _array(data, path, "lmk478", "(T, 478, 3)")
        if lmk478.ndim == 3 and lmk478.shape[1:] == (478, 3):
            lmk478 = lmk478[:, None]
        if lmk478.ndim != 4 or lmk478.shape[1:] != (1, 478, 3):
            raise _bad(path, "lmk478", f"has shape {lmk478.shape}", "(1, 478, 3) or (T, 478, 3)")
        if len(lmk478) != len(lmk203):
            raise _bad(
                path,
                "lmk478",
                f"covers {len(lmk478)} frames but lmk203 covers {len(lmk203)}",
                f"({len(lmk203)}, 478, 3): one entry per source frame in both",
            )
        for array in (boxes, lmk106, lmk203, lmk478, kps):
            if array is not None:
                array.flags.writeable = False  # shared by every run of the config that read the file
        return cls(path, boxes, lmk106, lmk203, lmk478, kps)

    def check_frame(self, index: int) -> None:
        """InputError when source frame ``index`` has no entry (the file covers too few frames)."""
        if not 0 <= index < self.num_frames:
            raise InputError(
                f"face.landmarks={self.path} has landmarks for {self.num_frames} source frame(s) but the "
                f"source has more (frame {index} has none): give lmk203 as (T, 203, 2) and lmk478 as "
                "(T, 478, 3) with T the source's frame count, or limit the frames with face.template_n_frames"
            )
