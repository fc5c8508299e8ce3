"""HuBERT feature windows: the reference's streaming chunking, offline and online, at 25 video fps.

HuBERT (streaming ONNX in the reference) turns a chunk of ``L`` samples at 16 kHz into
``T = (L - 80) // 320`` encodings of width 1024: one per 20 ms, i.e. two per 40 ms video frame. A chunk
covers ``past + current + future`` video frames (``chunksize``, default (3, 5, 2)) plus 80 samples of
receptive field; only the encodings of the ``current`` frames are kept, and each pair is averaged into
one feature row per video frame.

Notation (reference name -> ours):

====================  ==========================  ======================================
reference             ours                        default (3, 5, 2)
====================  ==========================  ======================================
``split_len``         ``window_samples``          int(10 * 0.04 * 16000) + 80 = 6480
``valid_feat_s/e``    ``valid_rows(T)``           rows [T - 14, T - 4) of T = 20
``chunksize[0]*640``  ``lead_in_samples``         1920 zeros before the audio (online)
``chunksize[1]*640``  ``hop_samples``             3200 samples between online chunks
front pad (offline)   ``offline_front_pad``       6480 - int(7 * 0.04 * 16000) = 2000
====================  ==========================  ======================================

An *encoder* is any callable ``encode(chunk (L,) float32) -> (T, D) float32``; :class:`StubEncoder`
is the deterministic stand-in the golden data was made with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ditto_research.audio.io import num_video_frames
from ditto_research.constants import SAMPLE_RATE
from ditto_research.errors import ConfigError, InputError

Encoder = Callable[[np.ndarray], np.ndarray]

FRAME_SECONDS = 0.04  # one video frame at 25 fps
SAMPLES_PER_FRAME = 640  # SAMPLE_RATE * FRAME_SECONDS
HUBERT_HOP = 320  # samples per HuBERT encoding (20 ms)
HUBERT_CONTEXT = 80  # extra samples the conv front end consumes: T = (L - 80) // 320
ENCODINGS_PER_FRAME = SAMPLES_PER_FRAME // HUBERT_HOP  # 2


def _frames_to_samples(num_frames: int) -> int:
    """``int(n * 0.04 * 16000)``, evaluated in float64 in the reference's order.

    This is *not* always ``n * 640``: the float product truncates to ``n * 640 - 1`` for some n
    (first at n = 1615). Offline chunk starts depend on it, so it is kept bit for bit.
    """
    return int(num_frames * FRAME_SECONDS * SAMPLE_RATE)


@dataclass(frozen=True)
class ChunkLayout:
    """Geometry of one HuBERT chunk, derived from ``chunksize = (past, current, future)`` video frames."""

    past: int
    current: int
    future: int

    @classmethod
    def from_chunksize(cls, chunksize: Sequence[int]) -> ChunkLayout:
        values = tuple(chunksize) if isinstance(chunksize, (tuple, list)) else ()
        is_int = [isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values]
        if len(values) != 3 or not all(is_int):
            raise ConfigError(
                f"chunksize must be three integers (past, current, future) frames, got {chunksize!r}"
            )
        past, current, future = (int(v) for v in values)
        if past < 0 or future < 0 or current < 1:
            raise ConfigError(
                f"chunksize needs past >= 0, current >= 1, future >= 0 frames, got {chunksize!r}"
            )
        return cls(past, current, future)

    @property
    def window_samples(self) -> int:
        """Samples per chunk fed to the encoder (the reference's ``split_len``)."""
        return _frames_to_samples(self.past + self.current + self.future) + HUBERT_CONTEXT

    @property
    def hop_samples(self) -> int:
        """Online: samples between consecutive chunk starts."""
        return self.current * SAMPLES_PER_FRAME

    @property
    def lead_in_samples(self) -> int:
        """Online: zeros put before the audio so the first chunk's ``past`` frames are silence."""
        return self.past * SAMPLES_PER_FRAME

    @property
    def offline_front_pad(self) -> int:
        """Offline: zeros put before the audio (the window minus its current + future part)."""
        return self.window_samples - _frames_to_samples(self.current + self.future)

    def valid_rows(self, num_encodings: int) -> slice:
        """Encoder rows of the ``current`` frames: ``enc[-2(current+future) : -2 future]`` (positive).

        Positive bounds also handle ``future = 0``, where the reference's ``enc[-2c:-0]`` would be empty.
        """
        start = num_encodings - ENCODINGS_PER_FRAME * (self.current + self.future)
        stop = num_encodings - ENCODINGS_PER_FRAME * self.future
        if start < 0:
            raise InputError(
                f"encoder gave {num_encodings} rows for a {self.window_samples}-sample chunk; chunksize "
                f"({self.past}, {self.current}, {self.future}) needs at least "
                f"{ENCODINGS_PER_FRAME * (self.current + self.future)}"
            )
        return slice(start, stop)


def _as_audio(audio: np.ndarray) -> np.ndarray:
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise InputError(f"audio must be 1-D mono samples, got shape {samples.shape}")
    return samples.astype(np.float32, copy=False)


def _encode(encode: Encoder, chunk: np.ndarray) -> np.ndarray:
    """Run the encoder; accepts (T, D) or a batch-of-one (1, T, D) output."""
    enc = np.asarray(encode(chunk))
    if enc.ndim == 3 and enc.shape[0] == 1:
        enc = enc[0]
    if enc.ndim != 2:
        raise InputError(f"encoder must return (T, D) encodings, got shape {enc.shape}")
    return enc


def chunk_features(chunk: np.ndarray, encode: Encoder, chunksize: Sequence[int] = (3, 5, 2)) -> np.ndarray:
    """One chunk -> its ``current`` feature rows (the reference ``Wav2FeatHubert.__call__``).

    Args:
        chunk: ``(window_samples,)`` float32 audio (6480 for the default chunksize).
        encode: encoder callable, ``(L,) -> (T, D)``.
        chunksize: (past, current, future) video frames.

    Returns:
        ``(current, D)`` float32: pairs of encodings averaged per video frame.
    """
    return _chunk_features(_as_audio(chunk), encode, ChunkLayout.from_chunksize(chunksize))


def _chunk_features(chunk: np.ndarray, encode: Encoder, layout: ChunkLayout) -> np.ndarray:
    enc = _encode(encode, chunk)
    valid = enc[layout.valid_rows(enc.shape[0])]
    return valid.reshape(layout.current, ENCODINGS_PER_FRAME, enc.shape[1]).mean(axis=1)


def offline_features(
    audio: np.ndarray,
    encode: Encoder,
    chunksize: Sequence[int] = (3, 5, 2),
    sr: int = SAMPLE_RATE,
) -> np.ndarray:
    """Whole-clip features (the reference ``Wav2FeatHubert.wav2feat``).

    The audio is padded with ``offline_front_pad`` zeros in front and one window of zeros at the end;
    chunk ``k`` starts at ``int(5k * 0.04 * 16000)`` (default chunksize) and gives ``current`` rows.

    Args:
        audio: ``(L,)`` mono samples at 16 kHz (use :func:`ditto_research.audio.io.load_audio`).
        encode: encoder callable, ``(L,) -> (T, D)``.
        chunksize: (past, current, future) video frames.
        sr: sample rate of ``audio``; must be 16000.

    Returns:
        ``(N, D)`` float32 with ``N = ceil(L / 16000 * 25)`` rows, one per video frame.
    """
    if sr != SAMPLE_RATE:
        raise ConfigError(
            f"HuBERT features need {SAMPLE_RATE} Hz audio, got sr={sr}; load it with load_audio(path)"
        )
    layout = ChunkLayout.from_chunksize(chunksize)
    samples = _as_audio(audio)
    num_frames = num_video_frames(samples.shape[0])
    if num_frames == 0:
        raise InputError("cannot compute audio features of empty audio (0 samples)")

    window = layout.window_samples
    padded = np.concatenate(
        [np.zeros(layout.offline_front_pad, np.float32), samples, np.zeros(window, np.float32)]
    )
    rows = []
    for frame in range(0, num_frames, layout.current):
        start = _frames_to_samples(frame)
        rows.append(_chunk_features(padded[start : start + window], encode, layout))
    return np.concatenate(rows, axis=0)[:num_frames]


def online_chunks(audio: np.ndarray, chunksize: Sequence[int] = (3, 5, 2)) -> Iterator[np.ndarray]:
    """The fixed-size chunks the reference's online loop (inference.py) feeds to ``run_chunk``.

    ``past * 640`` zeros go in front of the audio; chunks start every ``current * 640`` samples while the
    start is inside the padded audio, and the last ones are zero-padded to ``window_samples``.

    Yields:
        ``(window_samples,)`` float32 chunks.
    """
    layout = ChunkLayout.from_chunksize(chunksize)
    padded = np.concatenate([np.zeros(layout.lead_in_samples, np.float32), _as_audio(audio)])
    window = layout.window_samples
    for start in range(0, padded.shape[0], layout.hop_samples):
        chunk = padded[start : start + window]
        if chunk.shape[0] < window:
            chunk = np.pad(chunk, (0, window - chunk.shape[0]))
        yield chunk


def online_features(audio: np.ndarray, encode: Encoder, chunksize: Sequence[int] = (3, 5, 2)) -> np.ndarray:
    """All online features of a whole clip: ``chunk_features`` of every :func:`online_chunks` chunk.

    Returns:
        ``(num_chunks * current, D)`` float32 (not cut to the clip length, as in the reference).
    """
    layout = ChunkLayout.from_chunksize(chunksize)
    rows = [_chunk_features(chunk, encode, layout) for chunk in online_chunks(audio, chunksize)]
    if not rows:
        raise InputError("cannot compute audio features of empty audio (0 samples)")
    return np.concatenate(rows, axis=0)


class OnlineChunker:
    """Cuts audio that arrives in pieces into the online chunks of :func:`online_chunks`.

    ``push`` any number of samples and get every chunk they complete; ``flush`` at the end of the audio
    gives the zero-padded tail chunks. The chunks are the same whatever the piece sizes. This is the
    part a streaming stage needs when the encoder runs elsewhere.
    """

    def __init__(self, chunksize: Sequence[int] = (3, 5, 2)) -> None:
        self.layout = ChunkLayout.from_chunksize(chunksize)
        # Samples from the next chunk start onwards; the stream begins with the lead-in silence.
        self._pending = np.zeros(self.layout.lead_in_samples, np.float32)
        self._closed = False

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Add ``(n,)`` samples; returns the ``(window_samples,)`` chunks they complete (maybe none)."""
        if self._closed:
            raise InputError("push after flush(): an online audio stream cannot be reopened; start a new one")
        self._pending = np.concatenate([self._pending, _as_audio(samples)])
        window, hop = self.layout.window_samples, self.layout.hop_samples
        chunks = []
        consumed = 0
        while self._pending.shape[0] - consumed >= window:
            chunks.append(self._pending[consumed : consumed + window].copy())
            consumed += hop
        if consumed:
            self._pending = self._pending[consumed:].copy()
        return chunks

    def flush(self) -> list[np.ndarray]:
        """End of audio: the remaining chunks (every start inside the audio), zero-padded to the window."""
        self._closed = True
        window, hop = self.layout.window_samples, self.layout.hop_samples
        chunks = []
        for start in range(0, self._pending.shape[0], hop):
            chunk = self._pending[start : start + window]
            chunks.append(np.pad(chunk, (0, window - chunk.shape[0])))
        self._pending = self._pending[:0]
        return chunks


class OnlineFeatureStream:
    """:class:`OnlineChunker` plus the encoder: incremental :func:`online_features`.

    Each returned item is the ``(current, D)`` features of one chunk; their concatenation equals
    :func:`online_features` of the concatenated audio.
    """

    def __init__(self, encode: Encoder, chunksize: Sequence[int] = (3, 5, 2)) -> None:
        self._chunker = OnlineChunker(chunksize)
        self._encode = encode

    @property
    def layout(self) -> ChunkLayout:
        return self._chunker.layout

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Add ``(n,)`` samples; returns the ``(current, D)`` features of each chunk completed by them."""
        return [_chunk_features(c, self._encode, self.layout) for c in self._chunker.push(samples)]

    def flush(self) -> list[np.ndarray]:
        """End of audio: features of the remaining zero-padded chunks."""
        return [_chunk_features(c, self._encode, self.layout) for c in self._chunker.flush()]


class StubEncoder:
    """Deterministic stand-in for HuBERT used by the golden data: ``tanh(frames @ W)``.

    ``W`` is ``(RandomState(seed).standard_normal((320, dim)) / sqrt(320))`` as float32; a chunk of ``L``
    samples becomes ``T = (L - 80) // 320`` frames of 320 samples (the trailing ones are dropped).
    """

    def __init__(self, seed: int, dim: int = 1024) -> None:
        rng = np.random.RandomState(seed)
        self.weight = (rng.standard_normal((HUBERT_HOP, dim)) / np.sqrt(HUBERT_HOP)).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        """``(L,)`` float32 -> ``(T, dim)`` float32."""
        samples = _as_audio(chunk)
        num = max((samples.shape[0] - HUBERT_CONTEXT) // HUBERT_HOP, 0)
        frames = samples[: num * HUBERT_HOP].reshape(num, HUBERT_HOP)
        return np.tanh(frames @ self.weight)
