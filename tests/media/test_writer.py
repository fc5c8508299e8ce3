"""VideoWriter: H.264 at 25 fps, AAC audio of the input's length, atomic output, abort and overwrite rules."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from ditto_research.errors import DittoError, InputError
from ditto_research.media.ffmpeg import find_ffmpeg
from ditto_research.media.source import load_source
from ditto_research.media.writer import VideoWriter, probe_video

HEIGHT, WIDTH = 48, 64


def _speech(path: Path, seconds: float, rate: int = 16000) -> Path:
    subprocess.run(
        [
            find_ffmpeg(),
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=330:sample_rate={rate}:duration={seconds}",
            str(path),
        ],
        check=True,
    )
    return path


def _frames(count: int) -> list[np.ndarray]:
    return [np.full((HEIGHT, WIDTH, 3), (7 * i) % 256, np.uint8) for i in range(count)]


def _write(path: Path, count: int, audio: Path | None = None, **kwargs: object) -> Path:
    writer = VideoWriter(path, **kwargs)  # type: ignore[arg-type]
    for frame in _frames(count):
        writer.write(frame)
    return writer.close(audio)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(("num_frames", "audio_s"), [(31, 1.234), (10, 1.0), (40, 0.5)])
def test_video_with_audio(tmp_path: Path, num_frames: int, audio_s: float) -> None:
    """Frame count, 25 fps and size kept; the audio lasts as long as the input, shorter or longer."""
    audio = _speech(tmp_path / "speech.wav", audio_s)
    out = _write(tmp_path / "out" / "result.mp4", num_frames, audio)
    assert out == (tmp_path / "out" / "result.mp4").resolve() and out.is_file()
    frames, fps, width, height, audio_duration = probe_video(out)
    assert (frames, fps, width, height) == (num_frames, 25.0, WIDTH, HEIGHT)
    assert audio_duration is not None and abs(audio_duration - audio_s) <= 0.04
    assert _leftovers(out.parent) == ["result.mp4"]


def test_audio_in_another_format_and_rate(tmp_path: Path) -> None:
    audio = _speech(tmp_path / "speech.mp3", 0.8, rate=44100)
    out = _write(tmp_path / "result.mp4", 20, audio)
    frames, _, _, _, audio_duration = probe_video(out)
    assert frames == 20 and audio_duration is not None and abs(audio_duration - 0.8) <= 0.04


def test_video_without_audio_and_colours(tmp_path: Path) -> None:
    red = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    red[..., 0] = 255
    with VideoWriter(tmp_path / "silent.mp4") as writer:
        for _ in range(5):
            writer(red)
    assert writer.frames_written == 5
    assert probe_video(tmp_path / "silent.mp4") == (5, 25.0, WIDTH, HEIGHT, None)
    decoded = load_source(tmp_path / "silent.mp4").frame(2).astype(int)
    assert decoded[..., 0].mean() > 240 and decoded[..., 1:].mean() < 15  # RGB order kept


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "result.mp4")
    for frame in _frames(8):
        writer.write(frame)
    deadline = time.monotonic() + 10.0  # ffmpeg creates its file once the first frame reaches the encoder
    while not any(n.endswith(".video.mp4") for n in _leftovers(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.02)
    leftovers = _leftovers(tmp_path)
    # Hidden files only, never the output: the encoder's temporary and the output's reservation.
    assert len(leftovers) == 2 and all(n.startswith(".result.") for n in leftovers), leftovers
    assert leftovers[1] == ".result.mp4.lock" and leftovers[0].endswith(".video.mp4"), leftovers
    writer.abort()
    assert _leftovers(tmp_path) == []
    with pytest.raises(DittoError, match="already closed"):
        writer.write(_frames(1)[0])


def test_exception_in_context_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(tmp_path / "result.mp4") as writer:
            for frame in _frames(4):
                writer.write(frame)
            raise RuntimeError("boom")
    assert _leftovers(tmp_path) == []


def test_bad_audio_leaves_nothing(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "out" / "result.mp4")
    for frame in _frames(3):
        writer.write(frame)
    with pytest.raises(InputError, match=r"audio file not found: .*missing\.wav"):
        writer.close(tmp_path / "missing.wav")
    assert _leftovers(tmp_path / "out") == []

    silent_video = _write(tmp_path / "video_only.mp4", 3)
    writer = VideoWriter(tmp_path / "out" / "result.mp4")
    writer.write(_frames(1)[0])
    with pytest.raises(InputError, match="has no audio stream"):
        writer.close(silent_video)
    assert _leftovers(tmp_path / "out") == []


def test_close_without_frames(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "result.mp4")
    with pytest.raises(InputError, match="no frames were written"):
        writer.close()
    assert _leftovers(tmp_path) == []


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    out.write_bytes(b"precious")
    with pytest.raises(InputError, match=r"result\.mp4 already exists; pass overwrite=true"):
        VideoWriter(out)
    assert out.read_bytes() == b"precious"

    _write(out, 3, overwrite=True)
    assert probe_video(out)[0] == 3


def test_output_appearing_during_render_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "result.mp4"
    writer = VideoWriter(out)
    writer.write(_frames(1)[0])
    out.write_bytes(b"someone else's file")
    with pytest.raises(InputError, match="appeared while rendering"):
        writer.close()
    assert out.read_bytes() == b"someone else's file"
    assert _leftovers(tmp_path) == ["result.mp4"]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((47, 64, 3), np.uint8), "64x47 is not even"),
        (np.zeros((48, 63, 3), np.uint8), "63x48 is not even"),
        (np.zeros((48, 64, 3), np.float32), "uint8 RGB"),
        (np.zeros((48, 64), np.uint8), "uint8 RGB"),
    ],
)
def test_invalid_frames(tmp_path: Path, frame: np.ndarray, message: str) -> None:
    with VideoWriter(tmp_path / "result.mp4") as writer:
        with pytest.raises(InputError, match=message):
            writer.write(frame)
        writer.abort()
    assert _leftovers(tmp_path) == []


def test_frame_size_must_not_change(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "result.mp4")
    writer.write(np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(InputError, match="frame 1 is 32x48 but the video is 64x48"):
        writer.write(np.zeros((48, 32, 3), np.uint8))
    writer.abort()
    assert _leftovers(tmp_path) == []


def test_output_path_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder"):
        VideoWriter(tmp_path)
