"""MP4 output: H.264 (libx264, yuv420p, crf 18) at 25 fps with the speech muxed in as AAC.

The reference writes frames with imageio's ffmpeg writer (libx264, yuv420p, crf 18) to ``<out>.tmp.mp4`` and
then runs ``ffmpeg -i tmp -i audio -map 0:v -map 1:a -c:v copy -c:a aac out``. We drive the ffmpeg binary that
imageio-ffmpeg ships directly (argument lists, never a shell string):

1. frames are piped as raw rgb24 into an encoder process writing a hidden temporary file next to the output;
2. :meth:`VideoWriter.close` copies that video stream and re-encodes the audio to AAC into a second hidden
   temporary file (no ``-shortest``: neither stream is cut), then renames it onto the output path, so the
   output appears complete or not at all;
3. :meth:`VideoWriter.abort` (called on an exception inside ``with VideoWriter(...)``) kills the encoder
   and removes the temporary files.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import uuid
import weakref
from pathlib import Path
from typing import IO

import numpy as np

from ditto_research.audio.io import find_ffmpeg
from ditto_research.constants import FPS
from ditto_research.errors import ConfigError, DittoError, InputError
from ditto_research.render.output_files import OutputReservation, reserve_output, temp_name

__all__ = ["VideoWriter", "probe_video"]


def _last_lines(log: bytes | str, count: int = 3) -> str:
    text = log.decode("utf-8", errors="replace") if isinstance(log, bytes) else log
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:]) if lines else "no message from ffmpeg"


def _remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _clean(process: subprocess.Popen[bytes] | None, reservation: OutputReservation, *paths: Path) -> None:
    """Stop the encoder (if running), delete temporary files and release the output; the end of every
    writer (closed, aborted, or garbage collected)."""
    if process is not None:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()
            except OSError:  # the pipe is broken: the process is gone anyway
                pass
    _remove(*paths)
    reservation.release()


class VideoWriter:
    """Write ``(H, W, 3)`` uint8 RGB frames to an MP4 file, then mux the speech in.

    Use as a context manager: leaving the block normally calls :meth:`close` (without audio unless
    :meth:`close` was called inside it), leaving it with an exception calls :meth:`abort`.

    Args:
        path: output file (its folder is created).
        fps: output frame rate (Ditto renders 25 fps).
        crf: libx264 constant rate factor (18 as the reference; lower is better quality).
        preset: libx264 speed preset (the reference uses ffmpeg's default, ``medium``).
        overwrite: replace an existing ``path``; otherwise an existing file is an error.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float = FPS,
        crf: int = 18,
        preset: str = "medium",
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        if fps <= 0:
            raise ConfigError(f"fps must be positive, got {fps}")
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Claims the path (refused at once if it exists or another run writes it) and cleans up what runs
        # killed by SIGKILL left in the folder.
        self._reservation = reserve_output(self.path, overwrite)
        self.fps = float(fps)
        self.crf = int(crf)
        self.preset = preset
        self.overwrite = overwrite
        self.frames_written = 0
        self._ffmpeg = find_ffmpeg()
        self._size: tuple[int, int] | None = None  # (H, W) of the first frame
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._finished = False

        token = uuid.uuid4().hex[:12]
        self._video_tmp = temp_name(self.path, "video", token)
        self._final_tmp = temp_name(self.path, "part", token)
        self._finalizer = weakref.finalize(
            self, _clean, None, self._reservation, self._video_tmp, self._final_tmp
        )

    # ---------------------------------------------------------------- frames
    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame; every frame must have the first frame's (even) size."""
        if self._finished:
            raise DittoError(f"video writer for {self.path} is already closed")
        self._check_frame(frame)
        if self._process is None:
            self._start(frame.shape[0], frame.shape[1])
        process = self._process
        assert process is not None and process.stdin is not None
        try:
            process.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except (BrokenPipeError, OSError) as e:
            reason = self._encoder_log()
            self.abort()
            raise DittoError(f"video encoder for {self.path} stopped: {reason}") from e
        self.frames_written += 1

    __call__ = write

    def _check_frame(self, frame: np.ndarray) -> None:
        is_rgb8 = isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3
        if not is_rgb8 or frame.shape[2] != 3:
            described = (
                f"{frame.dtype} array of shape {frame.shape}"
                if isinstance(frame, np.ndarray)
                else type(frame).__name__
            )
            raise InputError(f"video frames must be (H, W, 3) uint8 RGB arrays, got a {described}")
        height, width = frame.shape[:2]
        if height % 2 or width % 2 or height == 0 or width == 0:
            raise InputError(
                f"frame size {width}x{height} is not even; H.264 yuv420p needs an even, "
                "non-zero width and height (load_source makes source frames even)"
            )
        if self._size is not None and (height, width) != self._size:
            raise InputError(
                f"frame {self.frames_written} is {width}x{height} but the video is "
                f"{self._size[1]}x{self._size[0]}; every frame must have the same size"
            )

    def _start(self, height: int, width: int) -> None:
        self._size = (height, width)
        command = [
            self._ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{width}x{height}",
            "-framerate",
            f"{self.fps:g}",
            "-i",
            "pipe:0",
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            self.preset,
            "-crf",
            str(self.crf),
            "-pix_fmt",
            "yuv420p",
            "-f",
            "mp4",
            "-y",
            str(self._video_tmp),
        ]
        self._log = tempfile.TemporaryFile()
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log
            )
        except OSError as e:
            self.abort()
            raise ConfigError(f"could not run ffmpeg ({self._ffmpeg}): {e}") from e
        # An unclosed writer that is garbage collected must not leave the encoder running.
        self._finalizer.detach()
        self._finalizer = weakref.finalize(
            self, _clean, self._process, self._reservation, self._video_tmp, self._final_tmp
        )

    # ---------------------------------------------------------------- finish
    def close(self, audio_path: str | Path | None = None) -> Path:
        """Finish the video, mux ``audio_path`` (any format ffmpeg reads) as AAC, and publish the file.

        Returns:
            The output path.

        Raises:
            InputError: no frame was written, the audio cannot be read, or the output appeared meanwhile.
            DittoError: ffmpeg failed (its last message is included).
        """
        if self._finished:
            raise DittoError(f"video writer for {self.path} is already closed")
        try:
            if self._process is None:
                raise InputError(f"no frames were written to {self.path}; nothing to save")
            self._finish_encoder()
            if audio_path is None:
                os.replace(self._video_tmp, self._final_tmp)
            else:
                self._mux(Path(audio_path).expanduser())
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._finished = True
        self._finalizer()
        if self._log is not None:
            self._log.close()
        return self.path

    def abort(self) -> None:
        """Stop the encoder and delete the temporary files; the output path is left untouched."""
        self._finished = True
        self._finalizer()
        if self._log is not None:
            self._log.close()

    def _finish_encoder(self) -> None:
        process = self._process
        assert process is not None and process.stdin is not None
        try:
            process.stdin.close()
        except OSError:  # a broken pipe shows up as a non-zero exit below
            pass
        if process.wait() != 0:
            raise DittoError(f"video encoding of {self.path} failed: {self._encoder_log()}")

    def _mux(self, audio: Path) -> None:
        if not audio.is_file():
            raise InputError(f"audio file not found: {audio}; give the speech file to mux into the video")
        if audio.resolve() == self.path:
            raise InputError(f"the output {self.path} is the audio input; choose another output path")
        command = [
            self._ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(self._video_tmp),
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
            str(self._final_tmp),
        ]
        try:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        except OSError as e:
            raise ConfigError(f"could not run ffmpeg ({self._ffmpeg}): {e}") from e
        if result.returncode != 0:
            log = result.stderr.decode("utf-8", errors="replace")
            if "matches no streams" in log:
                raise InputError(f"audio file {audio} has no audio stream; give a speech file")
            raise InputError(f"cannot mux audio {audio} into {self.path}: {_last_lines(log)}")

    def _publish(self) -> None:
        """Rename the finished temporary file onto the output path (no-clobber unless overwrite)."""
        if self.overwrite:
            os.replace(self._final_tmp, self.path)
            return
        try:
            os.link(self._final_tmp, self.path)  # atomic, and fails if the path exists
        except FileExistsError as e:
            raise InputError(
                f"output {self.path} appeared while rendering; pass overwrite=True or choose another path"
            ) from e
        except OSError:  # file systems without hard links
            if self.path.exists():
                raise InputError(
                    f"output {self.path} appeared while rendering; pass overwrite=True or choose another path"
                ) from None
            os.replace(self._final_tmp, self.path)
        else:
            self._final_tmp.unlink()

    # ---------------------------------------------------------------- helpers
    def _encoder_log(self) -> str:
        if self._log is None or self._log.closed:
            return "no message from ffmpeg"
        self._log.seek(0)
        return _last_lines(self._log.read())

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._finished:
            self.close()


_SIZE = re.compile(r"Video: [^\n]*?, (\d+)x(\d+)")
_FPS = re.compile(r"Video: [^\n]*?(\d+(?:\.\d+)?)(k?) (?:fps|tbr)")
_AUDIO_RATE = re.compile(r"Audio: [^\n]*?, (\d+) Hz")
_PROGRESS_FRAME = re.compile(r"^frame=(\d+)$", re.M)


def probe_video(path: str | Path) -> tuple[int, float, int, int, float | None]:
    """``(num_frames, fps, width, height, audio_duration_s | None)`` of a video file.

    Frames are counted by decoding the first video stream; the audio duration is the decoded sample count
    of the first audio stream over its sample rate (None without audio). Meant for tests and benchmarks.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"video file not found: {file}")
    ffmpeg = find_ffmpeg()
    header = subprocess.run(
        [ffmpeg, "-nostdin", "-hide_banner", "-i", f"file:{file}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    info = header.stderr.decode("utf-8", errors="replace")
    size, rate = _SIZE.search(info), _FPS.search(info)
    if size is None:
        raise InputError(f"{file} has no readable video stream: {_last_lines(info)}")
    fps = float(rate.group(1)) * (1000.0 if rate.group(2) else 1.0) if rate else 0.0
    audio_rate = _AUDIO_RATE.search(info)

    command = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostats",
        "-progress",
        "pipe:2",
        "-i",
        f"file:{file}",
        "-map",
        "0:v:0",
        "-fps_mode",
        "passthrough",
        "-f",
        "null",
        "-",
    ]
    if audio_rate is not None:
        command += ["-map", "0:a:0", "-ac", "1", "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    log = result.stderr.decode("utf-8", errors="replace")
    counts = _PROGRESS_FRAME.findall(log)
    if result.returncode != 0 or not counts:
        raise InputError(f"cannot decode {file}: {_last_lines(log)}")
    audio_s = len(result.stdout) / 4 / int(audio_rate.group(1)) if audio_rate is not None else None
    return int(counts[-1]), fps, int(size.group(1)), int(size.group(2)), audio_s
