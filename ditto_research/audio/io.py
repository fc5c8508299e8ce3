"""Audio file loading: any format ffmpeg reads, decoded to 16 kHz mono float32.

The reference loads audio with ``librosa.load(path, sr=16000)``: decode (soundfile, or audioread for
compressed formats), average the channels, resample with soxr at high quality, then fix the length. We call
the ffmpeg binary that imageio-ffmpeg ships instead (:mod:`ditto_research.media.ffmpeg` finds it and builds
the command lines), so no audio library is needed. Two ffmpeg runs do the same steps:

1. decode at the file's own rate and downmix to mono by the plain channel mean (``rematrix_maxval=1``
   makes ffmpeg normalise its stereo matrix to 0.5/0.5; for float output it would otherwise use
   0.707/0.707; layouts with more than two channels use ffmpeg's standard downmix matrix, which is not a
   plain mean). The output is a Sun AU stream (float32) on a pipe: its header gives the native rate and the
   sample count ``n`` follows from the payload, with no temporary file;
2. only when that rate differs from the target: ``aresample`` with ``resampler=soxr`` (the library librosa
   uses; ffmpeg's default precision of 20 bits is soxr's "HQ" preset, librosa's default ``soxr_hq``).

``librosa.resample(..., fix=True)`` then makes the length exactly ``ceil(n * target_sr / orig_sr)``
(``librosa.util.fix_length``: zero-pad or trim at the end). ffmpeg's soxr flush stops up to one sample
short of that, which moves the frame count ``ceil(samples / 16000 * 25)`` at a boundary, so
:func:`librosa_length` / :func:`fix_length` apply the same rule here.

Values are not rescaled: integer PCM maps to [-1, 1) exactly as librosa does.
"""

from __future__ import annotations

import math
import os
import struct
import wave
from pathlib import Path

import numpy as np

from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.errors import ConfigError, InputError
from ditto_research.media.ffmpeg import (
    NO_STREAM,
    audio_decode_args,
    audio_resample_args,
    find_ffmpeg,
    last_lines,
    run,
)

_AU_HEADER = struct.Struct(">4sIIIII")  # magic, data offset, data size, encoding, rate, channels
_AU_FLOAT32 = 6  # AU encoding code of big-endian IEEE float32


def _run_ffmpeg(command: list[str], file: Path, stdin: bytes | None = None) -> bytes:
    """stdout of ``command``; InputError naming ``file`` when ffmpeg fails."""
    result = run(command, stdin)
    if result.returncode != 0:
        raise InputError(f"cannot decode audio file {file}: {_failure_reason(result.stderr)}")
    return result.stdout


def _parse_au(raw: bytes, file: Path) -> tuple[np.ndarray, int]:
    """(samples (n,) float32, sample rate) of the mono float32 AU stream that
    :func:`~ditto_research.media.ffmpeg.audio_decode_args` makes ffmpeg write."""
    if len(raw) < _AU_HEADER.size:
        raise InputError(f"audio file {file} contains no audio samples (0 s of audio)")
    magic, offset, _, encoding, rate, channels = _AU_HEADER.unpack_from(raw)
    if magic != b".snd" or encoding != _AU_FLOAT32 or channels != 1 or rate <= 0:
        raise InputError(
            f"cannot decode audio file {file}: unexpected ffmpeg output (AU header {magic!r}, "
            f"encoding {encoding}, {channels} channels, {rate} Hz)"
        )
    payload = raw[offset:]
    usable = len(payload) - len(payload) % 4  # a truncated stream can end mid-sample
    return np.frombuffer(payload[:usable], dtype=">f4").astype(np.float32), int(rate)


def librosa_length(num_samples: int, orig_sr: int, target_sr: int) -> int:
    """Samples after resampling, librosa's rule: ``ceil(n * target_sr / orig_sr)``.

    Written as ``librosa.resample`` computes it (``int(np.ceil(n * (float(target_sr) / orig_sr)))``) so
    the float rounding is the same.
    """
    return int(np.ceil(num_samples * (float(target_sr) / orig_sr)))


def fix_length(samples: np.ndarray, size: int) -> np.ndarray:
    """``samples`` trimmed, or zero-padded at the end, to ``size`` (``librosa.util.fix_length``)."""
    if samples.shape[0] >= size:
        return samples[:size]
    return np.concatenate([samples, np.zeros(size - samples.shape[0], dtype=samples.dtype)])


def _failure_reason(stderr: bytes) -> str:
    """ffmpeg's last stderr line, or a plain sentence when the file simply has no audio stream."""
    text = stderr.decode("utf-8", errors="replace")
    return "the file has no audio stream" if NO_STREAM in text else last_lines(text)


def load_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file (wav, mp3, flac, m4a, ogg, or the audio track of a video) to mono float32.

    Args:
        path: the audio file.
        sample_rate: output rate in Hz (HuBERT features need 16000).

    Returns:
        ``(L,)`` float32 samples at ``sample_rate``, ``L = ceil(n * sample_rate / native_rate)`` for a file of
        ``n`` samples (librosa's length; ``L = n`` at the native rate). All-silent audio is valid.

    Raises:
        InputError: the file is missing, is not decodable audio, decodes to zero samples, or holds NaN or
            infinite samples.
        ConfigError: ``sample_rate`` is not a positive integer, or no ffmpeg binary is available.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive integer number of Hz, got {sample_rate!r}")
    file = Path(path).expanduser()
    if not file.exists():
        raise InputError(f"audio file not found: {file}")
    if file.is_dir():
        raise InputError(f"audio path {file} is a folder, not a file; give an audio file such as speech.wav")
    if not file.is_file():
        raise InputError(f"audio path is not a file: {file}")

    ffmpeg = find_ffmpeg()
    native, orig_sr = _parse_au(_run_ffmpeg(audio_decode_args(ffmpeg, file.resolve()), file), file)
    if native.size == 0:
        raise InputError(f"audio file {file} contains no audio samples (0 s of audio)")
    bad = int(np.count_nonzero(~np.isfinite(native)))
    if bad:
        raise InputError(
            f"audio file {file} has {bad} NaN or infinite samples (a float WAV written from broken data); "
            "fix or re-export the audio"
        )
    target_sr = int(sample_rate)
    if orig_sr == target_sr:
        return native
    raw = _run_ffmpeg(audio_resample_args(ffmpeg, orig_sr, target_sr), file, native.astype("<f4").tobytes())
    samples = np.frombuffer(raw[: len(raw) - len(raw) % 4], dtype="<f4").astype(np.float32)
    return fix_length(samples, librosa_length(native.size, orig_sr, target_sr))


def audio_duration_s(samples: np.ndarray | int, sample_rate: int = SAMPLE_RATE) -> float:
    """Duration in seconds of ``samples`` (an array of samples, or a sample count) at ``sample_rate``."""
    count = int(samples) if isinstance(samples, (int, np.integer)) else int(np.asarray(samples).shape[0])
    return count / float(sample_rate)


def num_video_frames(num_samples: int, sample_rate: int = SAMPLE_RATE, fps: float = FPS) -> int:
    """Video frames the audio drives: ``ceil(num_samples / sample_rate * fps)``, the reference's ``num_f``.

    The float expression is kept in the reference's order so the rounding is the same.
    """
    return math.ceil(num_samples / sample_rate * fps)


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write float samples in [-1, 1] (clipped) as a 16-bit mono WAV; returns the path."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return Path(path)
