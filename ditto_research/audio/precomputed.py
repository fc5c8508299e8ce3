"""``audio_encoder=precomputed audio_encoder.path=FILE``: speech features computed once, used as they are.

The file holds the (N, 1024) float32 rows the speech encoder would give, one per 40 ms video frame (25 Hz),
as the reference's ``wav2feat`` returns them: a ``.npy`` array, or an ``.npz`` with ``features`` (N, 1024)
and, for ``mode=online``, ``silence`` (O, 1024): the features of ``O = motion.overlap_v2`` frames of zeros,
which the online mode puts in front of the stream (the reference's ``wav2feat(zeros(overlap * 640))``).

The audio is still read: it sets the clip length (``ceil(seconds * 25)`` frames, so the file needs at least
that many rows) and is muxed into the video. Uses: features reused across a sweep, features from another
encoder, the end-to-end parity test. :meth:`Engine.speech_features <ditto_research.pipeline.engine.Engine.
speech_features>` computes the rows to save.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ditto_research.audio.features import OnlineChunker
from ditto_research.audio.io import num_video_frames
from ditto_research.constants import AUDIO_FEATURE_DIM
from ditto_research.errors import InputError

__all__ = ["PrecomputedFeatures", "PrecomputedFeatureStream"]


def _rows(value: np.ndarray, path: Path, key: str, width: int) -> np.ndarray:
    expected = f"(N, {width}) float rows at 25 Hz"
    if value.dtype.kind not in "fiu" or value.ndim != 2 or value.shape[1] != width or not len(value):
        raise InputError(
            f"audio_encoder.path={path}: {key} is a {value.dtype} array of shape {value.shape}; expected "
            f"{expected}"
        )
    if not np.isfinite(value).all():
        raise InputError(f"audio_encoder.path={path}: {key} holds NaN or infinite values")
    return np.ascontiguousarray(value, dtype=np.float32)


@dataclass(frozen=True)
class PrecomputedFeatures:
    """The checked rows of a feature file (see the module docstring)."""

    path: Path
    features: np.ndarray  # (N, D)
    silence: np.ndarray | None = None  # (O, D)

    @property
    def feat_dim(self) -> int:
        return int(self.features.shape[1])

    @classmethod
    def load(cls, path: str | Path, width: int = AUDIO_FEATURE_DIM) -> PrecomputedFeatures:
        """Read and check ``path`` (.npy / .npz); InputError naming the file and the expected shape."""
        path = Path(path)
        if not path.is_file():
            raise InputError(
                f"audio_encoder.path={path} does not exist; give a .npy of (N, {width}) speech features"
            )
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"audio_encoder.path={path} is not a .npy/.npz array ({e})") from e
        if isinstance(loaded, np.ndarray):
            return cls(path, _rows(loaded, path, "the array", width))
        with loaded:
            if "features" not in loaded.files:
                raise InputError(
                    f"audio_encoder.path={path} has no 'features' array (it has {', '.join(loaded.files)}); "
                    f"expected features (N, {width}) and optionally silence (O, {width})"
                )
            features = _rows(loaded["features"], path, "features", width)
            silence = _rows(loaded["silence"], path, "silence", width) if "silence" in loaded.files else None
        return cls(path, features, silence)

    def for_frames(self, num_frames: int, what: str = "the audio") -> np.ndarray:
        """The first ``num_frames`` rows (N, D); InputError when the file has fewer."""
        if len(self.features) < num_frames:
            raise InputError(
                f"audio_encoder.path={self.path} has {len(self.features)} feature rows but {what} needs "
                f"{num_frames} (one per 40 ms frame): expected ({num_frames}, {self.feat_dim}) or more"
            )
        return self.features[:num_frames]

    def silence_rows(self, num_frames: int) -> np.ndarray:
        """(num_frames, D) features of silence (the online prefix); InputError when the file has none."""
        if self.silence is None or len(self.silence) < num_frames:
            have = "no 'silence' array" if self.silence is None else f"{len(self.silence)} silence rows"
            raise InputError(
                f"audio_encoder.path={self.path} has {have}; mode=online needs the features of "
                f"{num_frames} silent frames: save an .npz with features (N, {self.feat_dim}) and silence "
                f"({num_frames}, {self.feat_dim})"
            )
        return self.silence[:num_frames]

    def stream(self, chunksize: Sequence[int]) -> PrecomputedFeatureStream:
        """An online stream serving these rows at the pace of the audio pushed (same chunks as HuBERT's)."""
        return PrecomputedFeatureStream(self, chunksize)


class PrecomputedFeatureStream:
    """:class:`~ditto_research.audio.features.OnlineFeatureStream`'s interface over precomputed rows.

    Each completed online chunk gives the next ``current`` rows of the file, so frames appear when the audio
    that covers them has arrived, as with a live encoder. Past the file's end it raises InputError.
    """

    def __init__(self, features: PrecomputedFeatures, chunksize: Sequence[int]) -> None:
        self._features = features
        self._chunker = OnlineChunker(chunksize)
        self._next = 0
        self._samples = 0

    @property
    def layout(self):
        return self._chunker.layout

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        chunks = self._chunker.push(samples)
        self._samples += int(np.asarray(samples).shape[0])
        out = []
        step = self.layout.current
        for _ in chunks:
            # A chunk of audio the file has no rows for: InputError naming the file and the rows needed.
            rows = self._features.for_frames(self._next + step, "the streamed audio")[self._next :]
            out.append(rows)
            self._next += step
        return out

    def flush(self) -> list[np.ndarray]:
        """End of audio: rows for the remaining chunks. The file must cover every frame of the audio (else
        InputError); rows past that are the last row repeated (the zero padding after the audio, which the
        clip length cuts off)."""
        self._features.for_frames(num_video_frames(self._samples), "the streamed audio")
        out = []
        step = self.layout.current
        for _ in self._chunker.flush():
            rows = self._features.features[self._next : self._next + step]
            if len(rows) < step:
                pad = self._features.features[-1:] if not len(rows) else rows[-1:]
                rows = np.concatenate([rows, np.repeat(pad, step - len(rows), axis=0)])
            out.append(rows)
            self._next += step
        return out
