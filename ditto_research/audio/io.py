"""Audio file loading: any format ffmpeg reads, decoded to 16 kHz mono float32.

The reference loads audio with ``librosa.load(path, sr=16000)``: decode (soundfile, or audioread for
compressed formats), average the channels, resample with soxr at high quality. We call the ffmpeg binary
that imageio-ffmpeg ships instead, so no audio library is needed. The decode is asked to do the same steps:

- ``aresample`` with ``resampler=soxr`` (the library librosa uses; ffmpeg's default precision of 20 bits
  is soxr's "HQ" preset, librosa's default ``soxr_hq``);
- downmix to mono by the plain channel mean: ``rematrix_maxval=1`` makes ffmpeg normalise its stereo
  matrix to 0.5/0.5 (for float output it would otherwise use 0.707/0.707). Layouts with more than two
  channels use ffmpeg's standard downmix matrix, which is not a plain mean;
- raw little-endian float32 on a pipe, so no temporary file is written.

Values are not rescaled: integer PCM maps to [-1, 1) exactly as librosa does.
"""

from __future__ import annotations

import math
import os
import subprocess
import wave
from pathlib import Path

import numpy as np

from ditto_research.errors import ConfigError, InputError


def find_ffmpeg() -> str:
    """Path of the ffmpeg binary (imageio-ffmpeg's bundled one, or ``IMAGEIO_FFMPEG_EXE``)."""
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise ConfigError("audio loading needs the 'imageio-ffmpeg' package (pip install it)") from e
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise ConfigError(f"no ffmpeg binary found ({e}); set IMAGEIO_FFMPEG_EXE to an ffmpeg program") from e


def _decode_command(ffmpeg: str, path: Path, sample_rate: int) -> list[str]:
    """ffmpeg argument list: first audio stream -> mono float32 at ``sample_rate`` on stdout."""
    resample = f"aresample=osr={sample_rate}:resampler=soxr:ochl=mono:rematrix_maxval=1"
    return [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel", "error",
        # "file:" keeps names such as "concat:x" or "a|b" from being read as ffmpeg protocols.
        "-i", f"file:{path}",
        "-map", "0:a:0",
        "-vn", "-sn", "-dn",
        "-af", resample,
        "-c:a", "pcm_f32le",
        "-f", "f32le",
        "pipe:1",
    ]


def _failure_reason(stderr: bytes) -> str:
    """ffmpeg's last stderr line, or a plain sentence when the file simply has no audio stream."""
    text = stderr.decode("utf-8", errors="replace")
    if "matches no streams" in text:
        return "the file has no audio stream"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message from ffmpeg"


def load_audio(path: str | os.PathLike[str], sample_rate: int = 16000) -> np.ndarray:
    """Decode an audio file (wav, mp3, flac, m4a, ogg, or the audio track of a video) to mono float32.

    Args:
        path: the audio file.
        sample_rate: output rate in Hz (HuBERT features need 16000).

    Returns:
        ``(L,)`` float32 samples at ``sample_rate``. All-silent audio is valid and returned as is.

    Raises:
        InputError: the file is missing, is not decodable audio, or decodes to zero samples.
        ConfigError: ``sample_rate`` is not a positive integer, or no ffmpeg binary is available.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ConfigError(f"sample_rate must be a positive integer number of Hz, got {sample_rate!r}")
    file = Path(path).expanduser()
    if not file.exists():
        raise InputError(f"audio file not found: {file}")
    if not file.is_file():
        raise InputError(f"audio path is not a file: {file}")

    command = _decode_command(find_ffmpeg(), file.resolve(), int(sample_rate))
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as e:
        raise ConfigError(f"could not run ffmpeg ({command[0]}): {e}") from e
    if result.returncode != 0:
        raise InputError(f"cannot decode audio file {file}: {_failure_reason(result.stderr)}")

    raw = result.stdout
    usable = len(raw) - len(raw) % 4  # a truncated stream can end mid-sample
    samples = np.frombuffer(raw[:usable], dtype="<f4").astype(np.float32)
    if samples.size == 0:
        raise InputError(f"audio file {file} contains no audio samples (0 s of audio)")
    return samples


def audio_duration_s(samples: np.ndarray | int, sample_rate: int = 16000) -> float:
    """Duration in seconds of ``samples`` (an array of samples, or a sample count) at ``sample_rate``."""
    count = int(samples) if isinstance(samples, (int, np.integer)) else int(np.asarray(samples).shape[0])
    return count / float(sample_rate)


def num_video_frames(num_samples: int, sample_rate: int = 16000, fps: float = 25.0) -> int:
    """Video frames the audio drives: ``ceil(num_samples / sample_rate * fps)``, the reference's ``num_f``.

    The float expression is kept in the reference's order so the rounding is the same.
    """
    return math.ceil(num_samples / sample_rate * fps)


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int = 16000) -> Path:
    """Write float samples in [-1, 1] (clipped) as a 16-bit mono WAV; returns the path."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * 32767).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    return Path(path)
