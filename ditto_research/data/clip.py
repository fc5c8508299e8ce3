"""One prepared training clip: the per-frame features the motion model is trained on, and their origin.

A clip holds, for its ``n`` frames at 25 fps (the layout of the released training code's ``Stage2Dataset``
inputs, one name per array instead of the packed ``mtn`` / ``aud`` / ``emo`` files):

==================  ===========  =============================================================================
``motion``          (n, 265)     the motion vector the LMDM generates: scale - 1, pitch / yaw / roll as 66-bin
                                 logits, t, exp (:mod:`ditto_research.motion.format`)
``canonical_kp``    (n, 63)      the motion extractor's canonical keypoints (the ``sc`` condition)
``audio_features``  (n, 1024)    HuBERT features at 25 Hz
``emotion``         (n, 8)       emotion probabilities (angry, disgust, fear, happy, neutral, sad, surprise,
                                 contempt)
``eye_open``        (n, 2)       eye openness, as registration computes it
``eye_ball``        (n, 3, 2)    eye ball movement, as registration computes it
==================  ===========  =============================================================================

and, optionally (clips prepared by this version have it; the reader takes clips without):

==================  ===========  =============================================================================
``audio_rms``       (n,)         the root mean square of each frame's 640 audio samples (16 kHz): what the
                                 validation's mouth-motion vs audio-energy correlation reads
==================  ===========  =============================================================================

plus ``meta``: a JSON-serialisable mapping (source, segment range, fps, face size, emotion source, flipped,
...). On disk a clip is one ``.npz`` (the arrays and ``meta`` as a JSON string), read without pickle.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ditto_research.atomic import write_atomically
from ditto_research.constants import (
    AUDIO_FEATURE_DIM,
    EMOTION_DIM,
    EYE_OPEN_DIM,
    MOTION_DIM,
    SOURCE_KP_DIM,
)
from ditto_research.errors import InputError

__all__ = ["CLIP_ARRAYS", "OPTIONAL_ARRAYS", "PreparedClip", "load_clip", "save_clip", "write_atomically"]

# name -> the shape of one frame's entry
CLIP_ARRAYS: Mapping[str, tuple[int, ...]] = {
    "motion": (MOTION_DIM,),
    "canonical_kp": (SOURCE_KP_DIM,),
    "audio_features": (AUDIO_FEATURE_DIM,),
    "emotion": (EMOTION_DIM,),
    "eye_open": (EYE_OPEN_DIM,),
    "eye_ball": (3, 2),
}
OPTIONAL_ARRAYS: Mapping[str, tuple[int, ...]] = {"audio_rms": ()}


@dataclass(frozen=True, eq=False)
class PreparedClip(Mapping[str, np.ndarray]):
    """A clip's arrays by name (:data:`CLIP_ARRAYS`, float32, read-only), its ``clip_id`` and ``meta``.

    Raises:
        InputError: an array is missing, has another shape or is not finite (naming ``what``, the key, the
            shape found and the one expected).
    """

    clip_id: str
    arrays: Mapping[str, np.ndarray]
    meta: Mapping[str, Any] = field(default_factory=dict)
    what: str = "the clip"

    def __post_init__(self) -> None:
        frames = None
        checked: dict[str, np.ndarray] = {}
        wanted = {**CLIP_ARRAYS, **{k: v for k, v in OPTIONAL_ARRAYS.items() if k in self.arrays}}
        for name, tail in wanted.items():
            if name not in self.arrays:
                names = ", ".join(CLIP_ARRAYS)
                raise InputError(f"{self.what} has no {name!r} array; a prepared clip has {names}")
            array = np.asarray(self.arrays[name])
            n = array.shape[0] if array.ndim else -1
            frames = n if frames is None else frames
            if array.shape != (frames, *tail) or not np.issubdtype(array.dtype, np.floating):
                expected = f"({frames}, {', '.join(map(str, tail))}) float"
                raise InputError(
                    f"{self.what}: {name!r} is {array.shape} {array.dtype}; expected {expected} "
                    "(one row per frame, every array the same number of frames)"
                )
            if not np.isfinite(array).all():
                raise InputError(f"{self.what}: {name!r} holds NaN or inf values")
            array = np.ascontiguousarray(array, dtype=np.float32)
            array.flags.writeable = False
            checked[name] = array
        object.__setattr__(self, "arrays", checked)
        object.__setattr__(self, "meta", dict(self.meta))

    @property
    def frames(self) -> int:
        return int(self.arrays["motion"].shape[0])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)


def save_clip(clip: PreparedClip, path: Path) -> Path:
    """Write ``clip`` to ``path`` (.npz) atomically (:func:`write_atomically`)."""
    meta = np.array(json.dumps({"clip_id": clip.clip_id, **clip.meta}))
    return write_atomically(Path(path), lambda f: np.savez(f, **clip.arrays, meta=meta))


def load_clip(path: Path) -> PreparedClip:
    """The clip saved at ``path`` (InputError naming the file when it is missing, truncated or malformed)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files if name != "meta"}
            meta = json.loads(str(data["meta"])) if "meta" in data.files else None
    except FileNotFoundError as e:
        raise InputError(f"prepared clip {path} does not exist; prepare the dataset again") from e
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise InputError(f"prepared clip {path} cannot be read ({e}); prepare the dataset again") from e
    if not isinstance(meta, dict) or "clip_id" not in meta:
        raise InputError(f"prepared clip {path} has no metadata; prepare the dataset again")
    clip_id = str(meta.pop("clip_id"))
    return PreparedClip(clip_id, arrays, meta, what=f"prepared clip {path}")
