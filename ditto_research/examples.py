"""The bundled example, generated locally: a portrait from scikit-image and a sentence from espeak-ng.

Nothing is downloaded. ``skimage.data.astronaut()`` is a frontal face photograph that ships with scikit-image;
the speech is synthesised with espeak-ng (Debian package ``espeak-ng``). Without espeak-ng a speech-like
synthetic signal (voiced pulses with a syllable-rate envelope) is written instead, and the log says so.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ditto_research.atomic import write_path_atomically
from ditto_research.cache import cache_folder
from ditto_research.constants import SAMPLE_RATE

log = logging.getLogger(__name__)

EXAMPLE_SENTENCE = (
    "Hello! This is a talking head made by ditto research, from one photo and a few seconds of speech."
)


def cache_dir() -> Path:
    """Where generated examples live: ``examples/`` in the cache (``$DITTO_CACHE_DIR`` or
    ``~/.cache/ditto_research``); InputError naming ``DITTO_CACHE_DIR`` when it cannot take files."""
    return cache_folder("examples")


def example_source(directory: Path | None = None) -> Path:
    """A 512x512 frontal portrait PNG (scikit-image's astronaut photograph)."""
    import cv2
    from skimage import data

    path = (directory or cache_dir()) / "astronaut.png"
    if not path.is_file():
        rgb = data.astronaut()
        write_path_atomically(path, lambda p: cv2.imwrite(str(p), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))
    return path


def synthetic_speech(seconds: float, sample_rate: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Speech-like float32 audio: 120 Hz voiced pulses, formant-ish harmonics, ~4 Hz syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 120.0 * (1.0 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, np.pi)), 0.0, None) ** 2
    return (0.3 * voice * envelope / np.abs(voice).max()).astype(np.float32)


def example_audio(directory: Path | None = None, text: str = EXAMPLE_SENTENCE) -> Path:
    """A WAV of ``text`` spoken by espeak-ng (or synthetic speech when espeak-ng is not installed)."""
    import wave

    directory = directory or cache_dir()
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if espeak:
        path = directory / f"speech_{hashlib.sha1(text.encode()).hexdigest()[:10]}.wav"
        if not path.is_file():
            write_path_atomically(
                path, lambda p: subprocess.run([espeak, "-w", str(p), text], check=True, capture_output=True)
            )
        return path
    path = directory / "synthetic_speech.wav"
    if not path.is_file():
        log.warning("espeak-ng is not installed: the example audio is synthetic speech-like noise")
        samples = (synthetic_speech(4.0) * 32767).astype("<i2")

        def write(p: Path) -> None:
            with wave.open(str(p), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(SAMPLE_RATE)
                w.writeframes(samples.tobytes())

        write_path_atomically(path, write)
    return path
