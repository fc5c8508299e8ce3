"""Image sizes read from the header and checked before any pixel is decoded; every decoder failure one line.

The module itself, then each local path that loads a source through it: load_source (images and videos),
the infer CLI and an evaluation dataset row.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from ditto_research.audio.io import write_wav
from ditto_research.errors import InputError
from ditto_research.examples import synthetic_speech
from ditto_research.media import source
from ditto_research.media.ffmpeg import find_ffmpeg
from ditto_research.media.source import load_source
from ditto_research.render.image_limits import (
    LOCAL_BUDGET,
    UPLOAD_BUDGET,
    UPLOAD_FORMATS,
    ImageHeader,
    PixelBudget,
    check_size,
    checked_header,
    decode,
    read_header,
)
from tests.helpers import png_bomb

DECODED_20K_MB = 20000 * 20000 * 3 / 2**20  # the 20000x20000 bomb as OpenCV's BGR image: 1144 MB


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """20000x20000 of zeros (0.4 MB), and a header claiming 60000x60000 over a few bytes of pixel data."""
    folder = tmp_path_factory.mktemp("bombs")
    files = {
        "20000x20000": png_bomb(20000, 20000),
        "60000x60000": png_bomb(60000, 60000, zlib.compress(bytes(60001))[:12]),
    }
    for size, data in files.items():
        (folder / f"{size}.png").write_bytes(data)
    return {size: folder / f"{size}.png" for size in files}


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """cv2.imread and cv2.imdecode fail the test if anything calls them."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(cv2, "imread", refuse)
    monkeypatch.setattr(cv2, "imdecode", refuse)


def _noise(height: int, width: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, channels), np.uint8)


@pytest.mark.parametrize(
    ("ext", "params", "channels", "fmt", "has_alpha"),
    [
        (".png", [], 3, "PNG", False),
        (".png", [], 4, "PNG", True),
        (".jpg", [], 3, "JPEG", False),
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], 3, "WEBP", False),  # VP8 (lossy)
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101], 3, "WEBP", False),  # VP8L (lossless)
        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80], 4, "WEBP", True),  # VP8X (lossy with alpha)
        (".bmp", [], 3, "BMP", False),
        (".tiff", [], 4, "TIFF", True),
        (".ppm", [], 3, "PPM", False),
        (".sr", [], 3, "SUN", False),
        (".jp2", [], 3, "JPEG2000", False),
    ],
)
def test_header_of_each_format_and_the_decode(
    tmp_path: Path, ext: str, params: list[int], channels: int, fmt: str, has_alpha: bool
) -> None:
    ok, encoded = cv2.imencode(ext, _noise(37, 53, channels), params)
    data = encoded.tobytes()
    path = tmp_path / f"image{ext}"
    path.write_bytes(data)
    expected = ImageHeader(fmt, 53, 37, has_alpha)
    assert read_header(data, "x") == read_header(path, "x") == expected
    header = checked_header(path, "x", LOCAL_BUDGET)
    np.testing.assert_array_equal(decode(path, header, "x"), cv2.imread(str(path), cv2.IMREAD_COLOR))
    np.testing.assert_array_equal(decode(data, header, "x"), cv2.imdecode(encoded, cv2.IMREAD_COLOR))


def test_pillow_bomb_checks_do_not_fire_before_ours(bombs: dict[str, Path]) -> None:
    with pytest.raises(Image.DecompressionBombError):  # why Pillow's plugins are called directly
        Image.open(bombs["20000x20000"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns over 89 MP
        assert read_header(bombs["20000x20000"], "x") == ImageHeader("PNG", 20000, 20000, False)
        assert read_header(bombs["60000x60000"].read_bytes(), "x").pixels == 60000 * 60000
        assert checked_header(png_bomb(10000, 10000, b"x"), "x", LOCAL_BUDGET).pixels == 10**8


def test_the_budget_message_names_the_input_its_size_the_limit_and_the_fix(bombs: dict[str, Path]) -> None:
    with pytest.raises(InputError) as error:
        checked_header(bombs["20000x20000"].read_bytes(), "the upload", UPLOAD_BUDGET, UPLOAD_FORMATS)
    assert str(error.value) == (
        "the upload is 20000x20000 pixels (400.0 MP), over the limit of 8192 pixels a side and 50 MP; "
        "downscale it (portraits are resized to face.max_size, 1920 pixels by default, anyway)"
    )
    with pytest.raises(InputError, match="is 8x8 pixels; give one at least 16 pixels a side"):
        checked_header(png_bomb(8, 8), "the upload", UPLOAD_BUDGET)
    budget = PixelBudget(min_side=2, max_side=100, max_pixels=5000)
    check_size(100, 50, budget, "x")  # the limits themselves are allowed
    for width, height in [(101, 10), (80, 80), (1, 10)]:
        with pytest.raises(InputError, match=f"x is {width}x{height} pixels"):
            check_size(width, height, budget, "x")


@pytest.mark.parametrize("size", ["20000x20000", "60000x60000"])
def test_load_source_refuses_a_bomb_before_decoding(
    bombs: dict[str, Path], size: str, no_decoding: None
) -> None:
    with pytest.raises(InputError, match=rf"source image .*{size}\.png is {size} pixels .* downscale it"):
        load_source(bombs[size])


def test_refusing_a_bomb_takes_no_decoding_memory(bombs: dict[str, Path]) -> None:
    """Peak RSS of a process that loads the 20000x20000 bomb: far below its decoded 1.1 GB."""
    script = (
        "import sys\n"
        "from ditto_research.errors import InputError\n"
        "from ditto_research.media.source import load_source\n"
        "try:\n"
        "    load_source(sys.argv[1])\n"
        "except InputError as e:\n"
        "    print(e)\n"
        # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a large pytest process would
        # report its parent's peak
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(bombs["20000x20000"])],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    *messages, peak_mb = run.stdout.splitlines()
    assert int(peak_mb) < DECODED_20K_MB / 4, f"peak RSS {peak_mb} MB"
    assert messages and "is 20000x20000 pixels" in messages[0]


def test_decoder_failures_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, png = cv2.imencode(".png", _noise(32, 32))
    cases = {
        "zeros.png": (b"\x89PNG\r\n\x1a\n" + bytes(40), "its PNG header is corrupt or truncated"),
        "cut.png": (png.tobytes()[:20], "its PNG header is corrupt or truncated"),
        "cut.jpg": (b"\xff\xd8\xff\xe0" + bytes(8), "its JPEG header is corrupt or truncated"),
        "garbage_pixels.png": (png_bomb(64, 64, b"garbage"), "the file is corrupt or truncated"),
        "cut_pixels.png": (png.tobytes()[: len(png) // 3], "the file is corrupt or truncated"),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError, match=f"cannot decode source image .*{name}: {expected}") as error:
            load_source(path)
        assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="cannot decode the upload: its WebP header is corrupt or truncated"):
        read_header(b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(8), "the upload")  # OpenCV: not an image
    # OpenCV's own pixel limit (cv2.error) when the budget is not asked: still an InputError
    header = read_header(png_bomb(60000, 60000, b"x"), "x")
    with pytest.raises(InputError, match="OpenCV refused it .*CV_IO_MAX_IMAGE_PIXELS"):
        decode(png_bomb(60000, 60000, b"x"), header, "the upload")

    def broken(*args: object) -> None:
        raise cv2.error("simulated\ndecoder failure")

    monkeypatch.setattr(cv2, "imread", broken)
    (tmp_path / "fine.png").write_bytes(png.tobytes())
    with pytest.raises(InputError, match="cannot decode source image .*fine.png: OpenCV refused it") as error:
        load_source(tmp_path / "fine.png")
    assert "\n" not in str(error.value)


def test_header_and_decoded_size_must_agree() -> None:
    ok, png = cv2.imencode(".png", _noise(32, 32))
    with pytest.raises(InputError, match="its header says 64x64 pixels but it decodes to 32x32"):
        decode(png.tobytes(), ImageHeader("PNG", 64, 64, False), "x")


def test_formats_without_a_header_reader_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "portrait.hdr"  # Radiance HDR: OpenCV reads it, nothing here reads its header
    cv2.imwrite(str(path), _noise(16, 16).astype(np.float32))
    with pytest.raises(InputError, match=r"portrait\.hdr is not an image in a format read here \(PNG, JPEG"):
        load_source(path)


def test_only_a_declared_alpha_channel_is_decoded_a_second_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    imread = cv2.imread

    def counting(path: str, flags: int) -> np.ndarray | None:
        calls.append(flags)
        return imread(path, flags)

    monkeypatch.setattr(cv2, "imread", counting)
    for channels in (3, 4):
        cv2.imwrite(str(tmp_path / f"{channels}.png"), _noise(24, 24, channels))
        load_source(tmp_path / f"{channels}.png").close()
    assert calls == [cv2.IMREAD_COLOR, cv2.IMREAD_COLOR, cv2.IMREAD_UNCHANGED]


def test_a_video_frame_over_the_budget_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "clip.mkv"
    subprocess.run(
        [find_ffmpeg(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=s=48x32:r=25"]
        + ["-frames:v", "3", "-c:v", "ffv1", str(path)],
        check=True,
    )
    assert load_source(path).num_frames == 3
    monkeypatch.setattr(source, "LOCAL_BUDGET", PixelBudget(min_side=2, max_side=40, max_pixels=10_000))

    def refuse(*args: object) -> None:
        raise AssertionError("the video was decoded")

    monkeypatch.setattr(source, "_VideoFrames", refuse)
    with pytest.raises(
        InputError, match=r"source video .*clip\.mkv is 48x32 pixels \(0\.0 MP\), over the limit"
    ):
        load_source(path)


@pytest.mark.parametrize("size", ["20000x20000", "60000x60000"])
def test_the_cli_refuses_a_bomb_in_one_line_and_writes_nothing(
    bombs: dict[str, Path], size: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ditto_research.infer",
            "model=tiny",
            f"source={bombs[size]}",
            f"output={out}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2, run.stderr[-2000:]
    assert len(errors) == 1 and f"is {size} pixels" in errors[0] and "downscale it" in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["outputs"]  # Hydra's log folder, no video


def test_an_evaluation_row_with_a_bomb_fails_that_clip_without_decoding(
    bombs: dict[str, Path], tmp_path: Path, no_decoding: None
) -> None:
    from ditto_research.evaluate.run import evaluate_from_overrides
    from tests.evaluate.conftest import TINY, write_csv

    speech = write_wav(tmp_path / "speech.wav", synthetic_speech(0.4))
    dataset = write_csv(tmp_path / "set.csv", [(str(bombs["20000x20000"]), str(speech))])
    record = evaluate_from_overrides(
        [*TINY, f"dataset={dataset}", "max_seconds=0.2", "metrics=[motion]", "logger=none"],
        output_dir=tmp_path / "run",
    )
    (clip,) = record.clips
    assert clip.status == "failed" and "is 20000x20000 pixels" in clip.error and "downscale it" in clip.error
