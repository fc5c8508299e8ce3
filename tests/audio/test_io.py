"""load_audio: real files in several formats made with the bundled ffmpeg, and the user-facing errors."""

from __future__ import annotations

import math
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from ditto_research.audio.io import (
    audio_duration_s,
    librosa_length,
    load_audio,
    num_video_frames,
    write_wav,
)
from ditto_research.errors import ConfigError, InputError
from ditto_research.media.ffmpeg import find_ffmpeg

SOURCE_RATE = 44100
DURATION_S = 1.5
TONE_HZ = 440.0


def _tone(rate: int) -> np.ndarray:
    t = np.arange(int(round(rate * DURATION_S))) / rate
    return (0.4 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def _ffmpeg_encode(raw: np.ndarray, rate: int, channels: int, out: Path, *codec: str) -> None:
    """Encode interleaved float32 samples from stdin to ``out`` (format from its extension)."""
    command = [
        find_ffmpeg(),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "f32le",
        "-ar",
        str(rate),
        "-ac",
        str(channels),
        "-i",
        "pipe:0",
        *codec,
        str(out),
    ]
    subprocess.run(command, input=raw.astype("<f4").tobytes(), check=True, capture_output=True)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """44.1 kHz stereo tone (right channel at half the left's level) in five formats."""
    root = tmp_path_factory.mktemp("audio")
    left = _tone(SOURCE_RATE)
    stereo = np.stack([left, 0.5 * left], axis=1)
    files = {}
    for ext, codec in {
        "wav": ("-c:a", "pcm_f32le"),
        "mp3": ("-c:a", "libmp3lame", "-b:a", "192k"),
        "flac": ("-c:a", "flac"),
        "m4a": ("-c:a", "aac", "-b:a", "192k"),
        "ogg": ("-c:a", "libvorbis", "-q:a", "6"),
    }.items():
        files[ext] = root / f"tone.{ext}"
        _ffmpeg_encode(stereo, SOURCE_RATE, 2, files[ext], *codec)
    return files


@pytest.mark.parametrize("ext", ["wav", "mp3", "flac", "m4a", "ogg"])
def test_stereo_44k_becomes_16k_mono(audio_files: dict[str, Path], ext: str) -> None:
    audio = load_audio(audio_files[ext])
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.shape[0] - int(DURATION_S * 16000)) <= 1
    # Mono is the channel mean: 0.75 of the left tone; compare away from the edges (codec delay/ramps).
    expected = 0.75 * _tone(16000)
    n = min(audio.shape[0], expected.shape[0])
    inner = slice(1600, n - 1600)
    lossless = ext in ("wav", "flac")
    tol = 2e-3 if lossless else 2e-2
    assert np.abs(audio[:n][inner] - expected[:n][inner]).max() < tol
    rms_ratio = np.sqrt(np.mean(audio[inner] ** 2) / np.mean(expected[inner] ** 2))
    assert abs(rms_ratio - 1.0) < (1e-3 if lossless else 5e-2)


def test_16k_int16_wav_is_passed_through_exactly(tmp_path: Path) -> None:
    pcm = ((np.arange(4000) % 200) - 100).astype("<i2") * 300
    path = tmp_path / "pcm16.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    audio = load_audio(path)
    np.testing.assert_array_equal(audio, pcm.astype(np.float32) / 32768)


def test_other_sample_rate(audio_files: dict[str, Path]) -> None:
    audio = load_audio(audio_files["flac"], sample_rate=8000)
    assert abs(audio.shape[0] - int(DURATION_S * 8000)) <= 1


# librosa.resample(fix=True) -> librosa.util.fix_length(y_hat, ceil(n * target_sr / orig_sr)).
def _librosa_rule(n: int, orig_sr: int, target_sr: int = 16000) -> int:
    return math.ceil(n * target_sr / orig_sr)


# Odd lengths, including the 22.05 kHz one that came out one sample short (58700, librosa 58701).
ODD_LENGTHS = (7, 1001, 12345, 44101, 80899, 80898)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_resampled_length_is_librosas(tmp_path: Path, rate: int) -> None:
    for n in ODD_LENGTHS:
        path = write_wav(tmp_path / f"{rate}_{n}.wav", 0.3 * np.sin(np.arange(n) * 0.05), rate)
        assert load_audio(path).shape == (_librosa_rule(n, rate),), (rate, n)
        assert librosa_length(n, rate, 16000) == _librosa_rule(n, rate)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_resampled_sine_keeps_its_frequency(tmp_path: Path, rate: int) -> None:
    n = rate + 37  # one second and an odd tail
    tone_hz = 1000.0
    path = write_wav(tmp_path / "sine.wav", 0.5 * np.sin(2 * np.pi * tone_hz * np.arange(n) / rate), rate)
    audio = load_audio(path)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.shape[0])))
    peak_hz = np.fft.rfftfreq(audio.shape[0], 1 / 16000)[int(np.argmax(spectrum))]
    assert abs(peak_hz - tone_hz) <= 1.0  # the FFT bin is ~1 Hz wide
    # Away from the edges the samples are the tone itself at 16 kHz (16-bit WAV + soxr HQ).
    expected = 0.5 * np.sin(2 * np.pi * tone_hz * np.arange(audio.shape[0]) / 16000)
    inner = slice(800, audio.shape[0] - 800)
    assert np.abs(audio[inner] - expected[inner]).max() < 2e-3


def test_native_rate_is_returned_unchanged(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "22k.wav", np.linspace(-0.5, 0.5, 1001), 22050)
    assert load_audio(path, sample_rate=22050).shape == (1001,)


def test_silent_audio_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    _ffmpeg_encode(np.zeros(8000, np.float32), 16000, 1, path, "-c:a", "pcm_s16le")
    audio = load_audio(path)
    assert audio.shape == (8000,) and not audio.any()


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(InputError, match=r"audio file not found: .*nope\.wav"):
        load_audio(path)


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a file"):
        load_audio(tmp_path)


def test_text_file_renamed_wav(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(InputError, match=r"cannot decode audio file .*notes\.wav: .*Invalid data") as info:
        load_audio(path)
    assert "\n" not in str(info.value)


def test_empty_wav(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    with pytest.raises(InputError, match=r"empty\.wav contains no audio samples"):
        load_audio(path)


def test_video_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "mute.mp4"
    command = [
        find_ffmpeg(),
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "color=c=red:s=64x64:d=0.2",
        str(path),
    ]
    subprocess.run(command, check=True, capture_output=True)
    with pytest.raises(InputError, match=r"mute\.mp4: the file has no audio stream"):
        load_audio(path)


def test_protocol_like_name_is_a_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "concat:tone.wav"
    _ffmpeg_encode(np.full(1600, 0.25, np.float32), 16000, 1, tmp_path / "plain.wav", "-c:a", "pcm_f32le")
    (tmp_path / "plain.wav").rename(path)
    np.testing.assert_array_equal(load_audio(path), np.full(1600, 0.25, np.float32))


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, True])
def test_bad_sample_rate(audio_files: dict[str, Path], rate: object) -> None:
    with pytest.raises(ConfigError, match="sample_rate"):
        load_audio(audio_files["wav"], sample_rate=rate)  # type: ignore[arg-type]


def test_duration_helpers() -> None:
    assert audio_duration_s(np.zeros(24000, np.float32)) == 1.5
    assert audio_duration_s(8000, 8000) == 1.0
    assert num_video_frames(52800) == 83  # 3.3 s at 25 fps
    assert num_video_frames(641) == 2
