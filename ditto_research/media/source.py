"""Load the source portrait: one image, or the frames of a video, resized as the reference does.

Reference: ``core/atomic_components/loader.py`` (``check_resize``, ``load_image``, ``load_video``).

- The longest side is capped at ``max_size`` (the other side scaled and rounded), then both sides are
  truncated to even numbers (yuv420p output needs them). Resizing uses ``cv2.resize`` with its default
  (bilinear) interpolation on the RGB frame, as the reference does.
- Image or video is decided by content, not by extension: OpenCV's signature check picks images (decoded
  with ``cv2.imread``, like the reference); anything else is probed with the ffmpeg binary imageio-ffmpeg
  ships and decoded as raw rgb24 frames, every decoded frame once (``-fps_mode passthrough``, the frames
  imageio's reader yields).
- Sizes are checked before decoding (:mod:`~ditto_research.render.image_limits`): an image's header, a
  video's probed frame size, against ``LOCAL_BUDGET``; a small file may declare a huge image.
- A video is not held in memory as a whole unless it fits ``cache_bytes``: :class:`SourceMedia` gives random
  access by frame index (mirror-looped past the end, :func:`~ditto_research.media.loop.mirror_index`) through
  a bounded cache and a sequential decoder that is reopened when an index behind it is asked for.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import cv2
import numpy as np

from ditto_research.errors import InputError
from ditto_research.media.ffmpeg import (
    NO_STREAM,
    find_ffmpeg,
    frame_rate,
    last_lines,
    run,
    video_decode_args,
    video_probe_args,
)
from ditto_research.media.loop import mirror_index
from ditto_research.render.image_limits import LOCAL_BUDGET, ImageHeader, check_size, checked_header, decode

__all__ = ["SourceMedia", "VideoStream", "check_resize", "load_source", "mirror_index", "stream_video"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_CACHE_BYTES = 2 << 30  # decoded video frames kept in memory (2 GiB)


def check_resize(height: int, width: int, max_size: int = 1920, division: int = 2) -> tuple[int, int, bool]:
    """Target size of a source frame: ``(new_h, new_w, needs_resize)`` (the reference ``check_resize``).

    The longest side is capped at ``max_size`` (``max_size <= 0``: no cap), the other scaled by the same
    factor and rounded; then each side is truncated to a multiple of ``division``.
    """
    new_h, new_w = height, width
    resize = False
    if max_size > 0 and max(height, width) > max_size:
        resize = True
        if height > width:
            new_h, new_w = max_size, int(round(width * max_size / height))
        else:
            new_h, new_w = int(round(height * max_size / width)), max_size
    if new_h % division or new_w % division:
        resize = True
        new_h -= new_h % division
        new_w -= new_w % division
    return new_h, new_w, resize


class _FrameStore(Protocol):
    def get(self, index: int) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceMedia:
    """A loaded source: ``frame(i)`` gives the ``(H, W, 3)`` uint8 RGB frame at loop position ``i``.

    Frames are read-only views of a shared cache; copy one before modifying it in place.
    Close the media (or use it as a context manager) to stop a video's decoder early; it is also
    stopped when the object is garbage collected.
    """

    path: Path
    is_image: bool
    num_frames: int
    height: int
    width: int
    fps: float | None  # source frame rate (videos); None for an image
    _store: _FrameStore = field(repr=False, compare=False)

    def frame(self, index: int, mirror: bool = True) -> np.ndarray:
        """Frame at loop position ``index >= 0``; past the end the clip plays backwards, then forwards."""
        return self._store.get(mirror_index(int(index), self.num_frames, mirror))

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self) -> Iterator[np.ndarray]:
        """The frames in order, once each."""
        return (self._store.get(i) for i in range(self.num_frames))

    def all_frames(self) -> list[np.ndarray]:
        """Every frame as a list (the reference's ``rgb_list``); holds the whole clip in memory."""
        return list(self)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> SourceMedia:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _StillFrame:
    """Frame store of an image: one frame."""

    def __init__(self, image: np.ndarray) -> None:
        image.flags.writeable = False
        self._image = image

    def get(self, index: int) -> np.ndarray:
        return self._image

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class _VideoGeometry:
    """Decoded size (after any rotation ffmpeg applies), resize target and source frame rate."""

    decoded_h: int
    decoded_w: int
    height: int
    width: int
    needs_resize: bool
    fps: float | None
    has_audio: bool = False  # the file lists an audio stream
    duration_s: float | None = None  # the container's duration, when it states one


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a decoder process and close its pipe (safe to call twice)."""
    if process.poll() is None:
        process.kill()
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


class _Decoder:
    """One ffmpeg process streaming raw rgb24 frames of the first video stream, read in order."""

    def __init__(self, command: list[str], geometry: _VideoGeometry) -> None:
        self._geometry = geometry
        self._frame_bytes = geometry.decoded_h * geometry.decoded_w * 3
        self.next_index = 0
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self._finalizer = weakref.finalize(self, _stop, self._process)

    def read(self) -> np.ndarray | None:
        """Next frame, resized to the target size, or None at the end of the stream."""
        stdout: IO[bytes] | None = self._process.stdout
        raw = stdout.read(self._frame_bytes) if stdout is not None else b""
        if len(raw) < self._frame_bytes:  # end of stream (a truncated last frame is dropped)
            return None
        g = self._geometry
        frame = np.frombuffer(raw, dtype=np.uint8).reshape(g.decoded_h, g.decoded_w, 3)
        if g.needs_resize:
            frame = cv2.resize(frame, (g.width, g.height))
        frame.flags.writeable = False
        self.next_index += 1
        return frame

    def close(self) -> None:
        self._finalizer()


class _VideoFrames:
    """Random access to a video's frames: an LRU cache of ``capacity`` frames over a sequential decoder.

    A miss ahead of the decoder reads forward; a miss behind it reopens the decoder at frame 0 and keeps the
    ``capacity`` frames ending at the index asked for, so a backwards (mirror) pass costs one reopen per
    ``capacity`` frames. When the whole clip fits, every frame is decoded once.
    """

    def __init__(self, path: Path, command: list[str], geometry: _VideoGeometry, cache_bytes: int) -> None:
        self._path = path
        self._command = command
        self._geometry = geometry
        self.capacity = max(1, cache_bytes // (geometry.height * geometry.width * 3))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._decoder: _Decoder | None = None
        self._lock = threading.Lock()

    def count_frames(self) -> int:
        """Decode the whole clip once: count its frames and keep the first ``capacity`` of them."""
        with self._lock:
            decoder = self._open()
            count = 0
            while (frame := decoder.read()) is not None:
                if count < self.capacity:
                    self._cache[count] = frame
                count += 1
            self._close_decoder()
            return count

    def get(self, index: int) -> np.ndarray:
        with self._lock:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached
            decoder = self._decoder
            if decoder is None or decoder.next_index > index:
                decoder = self._open()
            keep_from = index - self.capacity + 1
            while decoder.next_index <= index:
                position = decoder.next_index
                frame = decoder.read()
                if frame is None:
                    raise InputError(
                        f"source video {self._path} ended before frame {index}; "
                        "the file changed while in use, reload it"
                    )
                if position >= keep_from:
                    self._remember(position, frame)
            return self._cache[index]

    def close(self) -> None:
        with self._lock:
            self._close_decoder()
            self._cache.clear()

    def _remember(self, index: int, frame: np.ndarray) -> None:
        self._cache[index] = frame
        self._cache.move_to_end(index)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)

    def _open(self) -> _Decoder:
        self._close_decoder()
        self._decoder = _Decoder(self._command, self._geometry)
        return self._decoder

    def _close_decoder(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None


_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_AUDIO_STREAM = re.compile(r"Stream #0:\d+[^\n]*: Audio: ")
_OUTPUT_SIZE = re.compile(r"Output #0.*?Stream #\S+: Video: [^\n]*?, (\d+)x(\d+)", re.S)


def _probe_video(ffmpeg: str, path: Path, max_size: int) -> _VideoGeometry:
    """Decode size and frame rate of the first video stream (one frame is decoded to learn the size)."""
    result = run(video_probe_args(ffmpeg, path))
    log = result.stderr.decode("utf-8", errors="replace")
    if NO_STREAM in log:
        raise InputError(
            f"source {path} has no video stream (is it an audio file?); give a portrait image or a video"
        )
    size = _OUTPUT_SIZE.search(log)
    if result.returncode != 0 or size is None:
        hint = "corrupt or unsupported image" if path.suffix.lower() in IMAGE_SUFFIXES else "unreadable file"
        raise InputError(
            f"source {path} is neither an image nor a video that can be decoded ({hint}: "
            f"{last_lines(log)}); give a PNG/JPEG image or an MP4 video"
        )
    decoded_h, decoded_w = int(size.group(2)), int(size.group(1))
    height, width, needs_resize = check_resize(decoded_h, decoded_w, max_size)
    if height <= 0 or width <= 0:
        raise InputError(f"source video {path} is too small ({decoded_w}x{decoded_h}); give a larger video")
    duration = _DURATION.search(log)
    seconds = (
        int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3))
        if duration
        else None
    )
    has_audio = _AUDIO_STREAM.search(log.split("Output #0")[0]) is not None
    return _VideoGeometry(
        decoded_h, decoded_w, height, width, needs_resize, frame_rate(log), has_audio, seconds
    )


def _warn_if_transparent(path: Path, header: ImageHeader) -> None:
    """The colour channels are used as the original reads them (alpha dropped); a portrait that is fully
    transparent shows nothing a person would recognise, so say so. Only an image whose header declares
    transparency is decoded a second time, with its alpha."""
    if not header.has_alpha:
        return
    raw = decode(path, header, f"source image {path}", cv2.IMREAD_UNCHANGED)
    if raw.ndim != 3 or raw.shape[2] != 4:
        return
    alpha = raw[:, :, 3]
    if not alpha.any():
        log.warning(
            "source image %s is fully transparent (alpha 0 everywhere): its hidden colour values are used as "
            "they are; save the portrait without transparency if that is not what you see",
            path,
        )
    elif alpha.min() < alpha.max():
        log.info("source image %s has transparent parts; its colours are used, alpha is dropped", path)


def _load_image(path: Path, max_size: int) -> SourceMedia:
    what = f"source image {path}"
    header = checked_header(path, what, LOCAL_BUDGET)  # before decoding: the header may declare a bomb
    bgr = decode(path, header, what)
    _warn_if_transparent(path, header)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    height, width, needs_resize = check_resize(rgb.shape[0], rgb.shape[1], max_size)
    if height <= 0 or width <= 0:
        raise InputError(
            f"source image {path} is too small ({rgb.shape[1]}x{rgb.shape[0]}); "
            "give an image at least 2x2 pixels"
        )
    if needs_resize:
        rgb = cv2.resize(rgb, (width, height))
    return SourceMedia(path, True, 1, height, width, None, _StillFrame(rgb))


def _load_video(path: Path, max_size: int, n_frames: int, cache_bytes: int) -> SourceMedia:
    ffmpeg = find_ffmpeg()
    geometry = _probe_video(ffmpeg, path, max_size)
    check_size(geometry.decoded_w, geometry.decoded_h, LOCAL_BUDGET, f"source video {path}")
    store = _VideoFrames(path, video_decode_args(ffmpeg, path, n_frames), geometry, cache_bytes)
    count = store.count_frames()
    if count == 0:
        raise InputError(f"source video {path} contains no frames; re-encode it or give another video")
    return SourceMedia(path, False, count, geometry.height, geometry.width, geometry.fps, store)


@dataclass
class VideoStream:
    """A video read once, front to back (no random access, nothing cached): ``height`` x ``width`` after the
    ``max_size`` cap, the source's frame rate, and :meth:`frames` (each (H, W, 3) uint8 RGB, read-only).
    ``decoded`` counts the frames delivered. Close it (or use ``with``) to stop the decoder early."""

    path: Path
    height: int
    width: int
    source_fps: float | None
    fps: float | None  # the delivered rate (None: every frame of the source as it is)
    _decoder: _Decoder = field(repr=False)
    decoded: int = 0
    has_audio: bool = False  # the file lists an audio stream
    duration_s: float | None = None  # the file's duration as its container states it (whole file)

    def frames(self) -> Iterator[np.ndarray]:
        while (frame := self._decoder.read()) is not None:
            self.decoded += 1
            yield frame
        self._decoder.close()

    def close(self) -> None:
        self._decoder.close()

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stream_video(
    path: str | Path,
    max_size: int = 1920,
    fps: float | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
) -> VideoStream:
    """Open a video for one front-to-back pass (long videos: memory does not grow with their length).

    Args:
        max_size: cap on the longest side in pixels (<= 0: no cap), as :func:`load_source`.
        fps: deliver a constant ``fps`` stream (ffmpeg's fps filter; e.g. 25 for training data), or every
            decoded frame (None).
        start_s, duration_s: read only this time range (seconds; None: from the start / to the end).

    Raises:
        InputError: missing file, an image or audio file, an undecodable file, frames over the size budget.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"video {file} does not exist or is not a file; give the path of a video")
    if cv2.haveImageReader(str(file)):
        raise InputError(f"{file} is an image; give a video")
    ffmpeg = find_ffmpeg()
    geometry = _probe_video(ffmpeg, file, max_size)
    check_size(geometry.decoded_w, geometry.decoded_h, LOCAL_BUDGET, f"video {file}")
    command = video_decode_args(ffmpeg, file, fps=fps, start_s=start_s, duration_s=duration_s)
    decoder = _Decoder(command, geometry)
    return VideoStream(
        file,
        geometry.height,
        geometry.width,
        geometry.fps,
        fps,
        decoder,
        has_audio=geometry.has_audio,
        duration_s=geometry.duration_s,
    )


def load_source(
    path: str | Path,
    max_size: int = 1920,
    n_frames: int = -1,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> SourceMedia:
    """Load a portrait image or video.

    Args:
        path: image (PNG, JPEG, ...) or video (anything ffmpeg decodes); the type is read from the content.
        max_size: cap on the longest side in pixels (<= 0: no cap); sides are then made even.
        n_frames: videos: use only the first ``n_frames`` frames (<= 0: all).
        cache_bytes: videos: decoded frames kept in memory; longer clips are re-decoded on demand.

    Returns:
        :class:`SourceMedia`; ``frame(i)`` is ``(H, W, 3)`` uint8 RGB with even ``H`` and ``W``.

    Raises:
        InputError: the file is missing, a corrupt image, neither image nor video, a video without frames, or
            an image or video frame over ``LOCAL_BUDGET`` (checked before decoding).
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise InputError(f"source file not found: {file}; give the path of a portrait image or video")
    if file.is_dir():
        raise InputError(f"source {file} is a folder; give the path of a portrait image or video in it")
    if not file.is_file():
        raise InputError(f"source path is not a file: {file}; give the path of a portrait image or video")
    if cv2.haveImageReader(str(file)):  # image signature (PNG, JPEG, BMP, WebP, TIFF, ...)
        return _load_image(file, max_size)
    return _load_video(file, max_size, n_frames, cache_bytes)
