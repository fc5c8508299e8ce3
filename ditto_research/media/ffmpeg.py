"""The ffmpeg binary and every command line the package runs with it (argument lists, never a shell string).

imageio-ffmpeg ships an ffmpeg with libx264 and aac, so no system ffmpeg is needed (``IMAGEIO_FFMPEG_EXE``
names another). Every input file is given as ``file:PATH``: names such as ``concat:x`` or ``a|b`` are then
not read as ffmpeg protocols. The callers (:mod:`ditto_research.audio.io`, :mod:`ditto_research.media.source`,
:mod:`ditto_research.media.writer`) decide what a failure means for their input; this module only builds,
runs and reads.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from ditto_research.errors import ConfigError

__all__ = [
    "NO_STREAM",
    "audio_decode_args",
    "audio_resample_args",
    "find_ffmpeg",
    "frame_rate",
    "header_args",
    "last_lines",
    "mux_args",
    "run",
    "video_count_args",
    "video_decode_args",
    "video_encode_args",
    "video_probe_args",
]

NO_STREAM = "matches no streams"  # ffmpeg's message when a -map selects a stream the file does not have
_QUIET = ("-nostdin", "-hide_banner", "-loglevel", "error")
# The first video stream's rate as ffmpeg lists it ("25 fps", or "12.5k tbr" without an fps entry).
_FRAME_RATE = re.compile(r"Stream #0:\d+[^\n]*: Video: [^\n]*?(\d+(?:\.\d+)?)(k?) (?:fps|tbr)")


def find_ffmpeg() -> str:
    """Path of the ffmpeg binary (imageio-ffmpeg's bundled one, or ``IMAGEIO_FFMPEG_EXE``)."""
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise ConfigError("audio and video I/O need the 'imageio-ffmpeg' package (pip install it)") from e
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise ConfigError(f"no ffmpeg binary found ({e}); set IMAGEIO_FFMPEG_EXE to an ffmpeg program") from e


def run(command: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` to the end, stdout and stderr captured; ConfigError when ffmpeg cannot be started."""
    try:
        if stdin is None:
            return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        return subprocess.run(command, input=stdin, capture_output=True, check=False)
    except OSError as e:
        raise ConfigError(f"could not run ffmpeg ({command[0]}): {e}") from e


def last_lines(log: bytes | str, count: int = 1) -> str:
    """The last ``count`` non-empty lines of an ffmpeg log, joined by `` | `` (its reason for failing)."""
    text = log.decode("utf-8", errors="replace") if isinstance(log, bytes) else log
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else "no message from ffmpeg"


def frame_rate(log: str) -> float | None:
    """Frame rate of the first video stream in ffmpeg's stream listing (None when it lists none)."""
    rate = _FRAME_RATE.search(log)
    return float(rate.group(1)) * (1000.0 if rate.group(2) else 1.0) if rate else None


# ---- audio -------------------------------------------------------------------------------------------------


def _time_range(start_s: float | None, duration_s: float | None) -> list[str]:
    """Input options reading ``duration_s`` seconds from ``start_s`` (decoded from the keyframe before and
    discarded up to ``start_s``: accurate, not snapped to keyframes)."""
    args = ["-ss", f"{start_s:.6f}"] if start_s else []
    return args + (["-t", f"{duration_s:.6f}"] if duration_s is not None else [])


def audio_decode_args(
    ffmpeg: str, path: Path, start_s: float | None = None, duration_s: float | None = None
) -> list[str]:
    """First audio stream -> mono float32 Sun AU at the file's own rate on stdout; stereo is averaged
    (``rematrix_maxval=1``: 0.5/0.5, librosa's channel mean). ``start_s`` / ``duration_s``: a time range."""
    return [
        ffmpeg,
        *_QUIET,
        *_time_range(start_s, duration_s),
        "-i",
        f"file:{path}",
        "-map",
        "0:a:0",
        "-vn",
        "-sn",
        "-dn",
        "-af",
        "aresample=ochl=mono:rematrix_maxval=1",
        "-c:a",
        "pcm_f32be",
        "-f",
        "au",
        "pipe:1",
    ]


def audio_resample_args(ffmpeg: str, orig_sr: int, target_sr: int) -> list[str]:
    """Raw mono float32 at ``orig_sr`` on stdin -> soxr HQ at ``target_sr`` on stdout."""
    return [
        ffmpeg,
        *_QUIET,
        "-f",
        "f32le",
        "-ar",
        str(orig_sr),
        "-ac",
        "1",
        "-i",
        "pipe:0",
        "-af",
        f"aresample=osr={target_sr}:resampler=soxr",
        "-c:a",
        "pcm_f32le",
        "-f",
        "f32le",
        "pipe:1",
    ]


# ---- video input -------------------------------------------------------------------------------------------


def header_args(ffmpeg: str, path: Path) -> list[str]:
    """Open ``path`` without an output: ffmpeg lists its streams on stderr (and exits 1, as it always does
    without an output)."""
    return [ffmpeg, "-nostdin", "-hide_banner", "-i", f"file:{path}"]


def video_probe_args(ffmpeg: str, path: Path) -> list[str]:
    """Decode the first video frame to nothing: stderr lists the input and the decoded (rotated) size."""
    return [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-i",
        f"file:{path}",
        "-map",
        "0:v:0",
        "-frames:v",
        "1",
        "-c:v",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-f",
        "null",
        "-",
    ]


def video_decode_args(
    ffmpeg: str,
    path: Path,
    max_frames: int = -1,
    fps: float | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
) -> list[str]:
    """First video stream -> raw rgb24 frames on stdout, every decoded frame once; only the first
    ``max_frames`` when that is positive. With ``fps``, the frames of a constant ``fps`` stream instead (the
    fps filter: each output time takes the frame shown then, so any frame rate, variable included, becomes
    ``fps``). ``start_s`` / ``duration_s``: a time range (its first frame is the one shown at ``start_s``)."""
    limit = ["-frames:v", str(max_frames)] if max_frames > 0 else []
    timing = ["-vf", f"fps={fps:g}", "-fps_mode", "cfr"] if fps is not None else ["-fps_mode", "passthrough"]
    return [
        ffmpeg,
        *_QUIET,
        *_time_range(start_s, duration_s),
        "-i",
        f"file:{path}",
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
        *timing,
        *limit,
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "pipe:1",
    ]


def video_count_args(ffmpeg: str, path: Path, with_audio: bool) -> list[str]:
    """Decode the first video stream to nothing, reporting ``frame=N`` progress lines on stderr; with
    ``with_audio`` the first audio stream also goes to stdout as mono float32 (its length is its duration)."""
    command = [
        ffmpeg,
        *_QUIET,
        "-nostats",
        "-progress",
        "pipe:2",
        "-i",
        f"file:{path}",
        "-map",
        "0:v:0",
        "-fps_mode",
        "passthrough",
        "-f",
        "null",
        "-",
    ]
    if with_audio:
        command += ["-map", "0:a:0", "-ac", "1", "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"]
    return command


# ---- video output ------------------------------------------------------------------------------------------


def video_encode_args(
    ffmpeg: str, width: int, height: int, fps: float, preset: str, crf: int, output: Path
) -> list[str]:
    """Raw rgb24 frames on stdin -> H.264 (libx264, yuv420p) MP4 without audio at ``output``."""
    return [
        ffmpeg,
        *_QUIET,
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-framerate",
        f"{fps:g}",
        "-i",
        "pipe:0",
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        str(crf),
        "-pix_fmt",
        "yuv420p",
        "-f",
        "mp4",
        "-y",
        str(output),
    ]


def mux_args(ffmpeg: str, video: Path, audio: Path, output: Path) -> list[str]:
    """``video``'s stream copied and ``audio``'s first stream as AAC into the MP4 ``output``; neither stream
    is cut (no ``-shortest``). ``video`` is our own temporary file, so it needs no ``file:``."""
    return [
        ffmpeg,
        *_QUIET,
        "-i",
        str(video),
        "-i",
        f"file:{audio}",
        "-map",
        "0:v:0",
        "-map",
        "1:a:0",
        "-c:v",
        "copy",
        "-c:a",
        "aac",
        "-f",
        "mp4",
        "-y",
        str(output),
    ]
