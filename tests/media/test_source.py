"""load_source: resize rule, image/video by content, video random access with mirror looping, errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import imageio
import numpy as np
import pytest

from ditto_research.errors import InputError
from ditto_research.media.ffmpeg import find_ffmpeg
from ditto_research.media.loop import mirror_index
from ditto_research.media.source import check_resize, load_source
from ditto_research.media.writer import VideoWriter


def _ffmpeg(*args: str) -> None:
    subprocess.run([find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _noise_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 BGR with smooth content (so resizing is not trivially exact)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _lossless_video(path: Path, width: int, height: int, frames: int) -> None:
    """A lossless (ffv1) video of odd or even size with moving content."""
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=s={width}x{height}:r=25",
        "-frames:v",
        str(frames),
        "-c:v",
        "ffv1",
        "-pix_fmt",
        "bgr0",
        str(path),
    )


def _reference_frames(path: Path, max_size: int, n_frames: int = -1) -> list[np.ndarray]:
    """The reference ``load_video``: imageio's ffmpeg reader, ``check_resize`` of frame 0, cv2.resize."""
    frames = []
    with imageio.get_reader(str(path), "ffmpeg") as reader:
        for idx, rgb in enumerate(reader):
            if 0 < n_frames <= idx:
                break
            new_h, new_w, resize = check_resize(rgb.shape[0], rgb.shape[1], max_size)
            frames.append(cv2.resize(rgb, (new_w, new_h)) if resize else np.asarray(rgb))
    return frames


@pytest.mark.parametrize(
    ("size", "max_size", "expected"),
    [
        ((512, 512), 1920, (512, 512, False)),
        ((75, 101), 1920, (74, 100, True)),  # odd sides truncated
        ((201, 300), 128, (86, 128, True)),  # 201 * 128 / 300 = 85.76 -> 86
        ((300, 201), 128, (128, 86, True)),
        ((400, 201), 200, (200, 100, True)),  # 100.5 rounds half to even, as Python's round
        ((4000, 3000), 1920, (1920, 1440, True)),
        ((3001, 5), -1, (3000, 4, True)),  # max_size <= 0: no cap
    ],
)
def test_check_resize(size: tuple[int, int], max_size: int, expected: tuple[int, int, bool]) -> None:
    assert check_resize(*size, max_size) == expected


def test_image_odd_size_is_truncated_to_even(tmp_path: Path) -> None:
    bgr = _noise_image(75, 101)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), bgr)
    media = load_source(path)
    expected = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (100, 74))
    assert media.is_image and media.num_frames == 1 and media.fps is None
    assert (media.height, media.width) == (74, 100)
    np.testing.assert_array_equal(media.frame(0), expected)
    np.testing.assert_array_equal(media.frame(57), expected)  # a still source loops its only frame


def test_image_larger_than_max_size(tmp_path: Path) -> None:
    bgr = _noise_image(201, 300, seed=1)
    path = tmp_path / "face.jpg"
    cv2.imwrite(str(path), bgr)
    decoded = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    media = load_source(path, max_size=128)
    assert media.frame(0).shape == (86, 128, 3) and media.frame(0).dtype == np.uint8
    np.testing.assert_array_equal(media.frame(0), cv2.resize(decoded, (128, 86)))


def test_image_without_resize_is_untouched_and_read_only(tmp_path: Path) -> None:
    bgr = _noise_image(64, 48, seed=2)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), bgr)
    frame = load_source(path).frame(0)
    np.testing.assert_array_equal(frame, bgr[..., ::-1])
    assert not frame.flags.writeable


def test_type_is_decided_by_content_not_extension(tmp_path: Path) -> None:
    image_path = tmp_path / "portrait.mp4"  # a PNG with a video extension
    cv2.imwrite(str(tmp_path / "p.png"), _noise_image(32, 32))
    (tmp_path / "p.png").rename(image_path)
    assert load_source(image_path).is_image

    video_path = tmp_path / "clip.png"  # a video with an image extension
    _lossless_video(tmp_path / "clip.mkv", 32, 24, 3)
    (tmp_path / "clip.mkv").rename(video_path)
    media = load_source(video_path)
    assert not media.is_image and media.num_frames == 3


@pytest.mark.parametrize(("size", "max_size"), [((67, 51), 1920), ((160, 96), 100)])
def test_video_frames_match_the_reference_loader(
    tmp_path: Path, size: tuple[int, int], max_size: int
) -> None:
    path = tmp_path / "clip.mkv"
    _lossless_video(path, *size, frames=7)
    reference = _reference_frames(path, max_size)
    media = load_source(path, max_size=max_size)
    assert not media.is_image and media.fps == pytest.approx(25.0)
    assert media.num_frames == len(reference) == 7
    assert (media.height, media.width) == reference[0].shape[:2]
    assert media.height % 2 == 0 and media.width % 2 == 0
    for i, expected in enumerate(reference):
        np.testing.assert_array_equal(media.frame(i), expected)


def test_video_n_frames_limits_the_clip(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    _lossless_video(path, 32, 24, frames=9)
    media = load_source(path, n_frames=4)
    assert media.num_frames == 4
    np.testing.assert_array_equal(media.frame(3), _reference_frames(path, 1920, n_frames=4)[3])


def test_video_mirror_loop_and_small_cache(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with VideoWriter(path) as writer:  # flat grey levels tell the frames apart after lossy coding
        for i in range(6):
            writer.write(np.full((24, 32, 3), 30 + 35 * i, np.uint8))
    full = load_source(path)
    frames = [full.frame(i).copy() for i in range(full.num_frames)]
    assert full.num_frames == 6
    levels = [int(round(f.mean())) for f in frames]
    assert levels == sorted(levels) and len(set(levels)) == 6

    # A cache of two frames forces re-decoding on every backwards step of the mirror pass.
    small = load_source(path, cache_bytes=2 * 24 * 32 * 3)
    order = [mirror_index(i, 6) for i in range(20)]
    assert order[6:12] == [5, 4, 3, 2, 1, 0]
    for i, j in enumerate(order):
        np.testing.assert_array_equal(small.frame(i), frames[j])
    np.testing.assert_array_equal(small.frame(7, mirror=False), frames[1])
    assert [f.mean() for f in small] == [f.mean() for f in frames]
    small.close()
    full.close()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"source file not found: .*nope\.png"):
        load_source(tmp_path / "nope.png")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder"):
        load_source(tmp_path)


def test_corrupt_image(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), _noise_image(64, 64))
    data = good.read_bytes()
    bad = tmp_path / "bad.png"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match=r"cannot decode source image .*bad\.png.*corrupt"):
        load_source(bad)


def test_garbage_with_image_extension(tmp_path: Path) -> None:
    bad = tmp_path / "face.jpg"
    bad.write_bytes(b"\x00\x01not an image at all" * 10)
    message = r"face\.jpg is neither an image nor a video.*corrupt or unsupported"
    with pytest.raises(InputError, match=message):
        load_source(bad)


def test_text_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a portrait\n")
    with pytest.raises(InputError, match=r"notes\.txt is neither an image nor a video") as info:
        load_source(text)
    assert "\n" not in str(info.value)


def test_audio_file_has_no_video_stream(tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000:duration=0.3", str(wav))
    with pytest.raises(InputError, match=r"speech\.wav has no video stream"):
        load_source(wav)


def test_video_with_zero_frames(tmp_path: Path) -> None:
    empty = tmp_path / "empty.y4m"  # a valid stream header and no frame
    empty.write_bytes(b"YUV4MPEG2 W64 H48 F25:1 Ip A1:1 C420jpeg\n")
    with pytest.raises(InputError, match=r"empty\.y4m contains no frames"):
        load_source(empty)


def test_transparency_is_said_and_a_folder_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 120
    cv2.imwrite(str(tmp_path / "clear.png"), rgba)  # alpha 0 everywhere
    with caplog.at_level("WARNING"):
        load_source(tmp_path / "clear.png").close()
    assert "is fully transparent (alpha 0 everywhere)" in caplog.text
    caplog.clear()
    rgba[..., 3] = 255
    cv2.imwrite(str(tmp_path / "opaque.png"), rgba)
    with caplog.at_level("WARNING"):
        load_source(tmp_path / "opaque.png").close()
    assert "transparent" not in caplog.text
    with pytest.raises(InputError, match="is a folder; give the path of a portrait image or video in it"):
        load_source(tmp_path)


def test_a_video_streams_once_at_its_own_rate_or_resampled(tmp_path: Path) -> None:
    """stream_video: one front-to-back pass; fps=25 turns a 50 fps clip into 25 frames a second (every other
    frame), None delivers every decoded frame; frames are capped like load_source's."""
    from ditto_research.media.source import stream_video

    video = tmp_path / "fast.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=50:duration=2", "-pix_fmt", "yuv420p", str(video))
    with stream_video(video, max_size=160, fps=25) as resampled:
        frames = list(resampled.frames())
        assert resampled.source_fps == 50 and resampled.decoded == len(frames) == 50
        assert frames[0].shape == (120, 160, 3) and not frames[0].flags.writeable
    with stream_video(video) as every:
        assert sum(1 for _ in every.frames()) == every.decoded == 100
    with pytest.raises(InputError, match="is an image; give a video"):
        cv2.imwrite(str(tmp_path / "still.png"), _noise_image(32, 32))
        stream_video(tmp_path / "still.png")
    with pytest.raises(InputError, match="does not exist"):
        stream_video(tmp_path / "missing.mp4")
