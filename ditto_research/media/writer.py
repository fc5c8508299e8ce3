"""MP4 output: H.264 (libx264, yuv420p, crf 18) at 25 fps with the speech muxed in as AAC.

The reference writes frames with imageio's ffmpeg writer (libx264, yuv420p, crf 18) to ``<out>.tmp.mp4`` and
then runs ``ffmpeg -i tmp -i audio -map 0:v -map 1:a -c:v copy -c:a aac out``. We drive the ffmpeg binary that
imageio-ffmpeg ships directly (argument lists from :mod:`~ditto_research.media.ffmpeg`, never a shell string):

1. frames are piped as raw rgb24 into an encoder process writing a hidden temporary file next to the output;
2. :meth:`VideoWriter.close` copies that video stream and re-encodes the audio to AAC into a second hidden
   temporary file (no ``-shortest``: neither stream is cut), then renames it onto the output path, so the
   output appears complete or not at all;
3. :meth:`VideoWriter.abort` (called on an exception inside ``with VideoWriter(...)``) kills the encoder
   and removes the temporary files.

:func:`write_frames` is the one "write frames" path of every run: it consumes an iterator of frames (anything
with an ``image``: the pipeline's ``FrameImage``) into a writer, or nowhere, and always closes the iterator.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Protocol, TypeVar

import numpy as np
from tqdm import tqdm

from ditto_research.constants import FPS
from ditto_research.errors import ConfigError, DittoError, InputError
from ditto_research.media.ffmpeg import (
    NO_STREAM,
    find_ffmpeg,
    frame_rate,
    header_args,
    last_lines,
    mux_args,
    run,
    video_count_args,
    video_encode_args,
)
from ditto_research.media.output_files import OutputReservation, reserve_output, temp_name

__all__ = ["VideoWriter", "probe_video", "write_frames"]


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
        command = video_encode_args(
            self._ffmpeg, width, height, self.fps, self.preset, self.crf, self._video_tmp
        )
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
        result = run(mux_args(self._ffmpeg, self._video_tmp, audio, self._final_tmp))
        if result.returncode != 0:
            log = result.stderr.decode("utf-8", errors="replace")
            if NO_STREAM in log:
                raise InputError(f"audio file {audio} has no audio stream; give a speech file")
            raise InputError(f"cannot mux audio {audio} into {self.path}: {last_lines(log, 3)}")

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
        return last_lines(self._log.read(), 3)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._finished:
            self.close()


_SIZE = re.compile(r"Video: [^\n]*?, (\d+)x(\d+)")
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
    info = run(header_args(ffmpeg, file)).stderr.decode("utf-8", errors="replace")
    size = _SIZE.search(info)
    if size is None:
        raise InputError(f"{file} has no readable video stream: {last_lines(info, 3)}")
    fps = frame_rate(info) or 0.0
    audio_rate = _AUDIO_RATE.search(info)

    result = run(video_count_args(ffmpeg, file, with_audio=audio_rate is not None))
    log = result.stderr.decode("utf-8", errors="replace")
    counts = _PROGRESS_FRAME.findall(log)
    if result.returncode != 0 or not counts:
        raise InputError(f"cannot decode {file}: {last_lines(log, 3)}")
    audio_s = len(result.stdout) / 4 / int(audio_rate.group(1)) if audio_rate is not None else None
    return int(counts[-1]), fps, int(size.group(1)), int(size.group(2)), audio_s


class _HasImage(Protocol):
    image: np.ndarray  # (H, W, 3) uint8 RGB


F = TypeVar("F", bound=_HasImage)


def write_frames(
    frames: Iterable[F],
    output: str | Path | None,
    audio: str | Path | None,
    *,
    num_frames: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    on_frame: Callable[[F], None] | None = None,
) -> tuple[Path | None, int]:
    """Consume ``frames`` (closing the iterator, which stops its pipeline, whatever happens).

    Args:
        output: the MP4 to write (None: consume only, e.g. for metrics).
        audio: muxed into the MP4 as AAC (None: video only).
        num_frames: expected count, for the progress bar.
        on_frame: called with every frame after it was written (in the caller's thread).

    Returns:
        The written path (None without ``output``) and the number of frames.
    """
    writer = VideoWriter(output, fps=FPS, overwrite=overwrite) if output is not None else None
    count = 0
    try:
        with tqdm(total=num_frames, desc="render", unit="frame", disable=not progress) as bar:
            for frame in frames:
                if writer is not None:
                    writer.write(frame.image)
                if on_frame is not None:
                    on_frame(frame)
                count += 1
                bar.update()
        path = writer.close(audio) if writer is not None else None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    return path, count
