"""The one "write frames" path of every session: frames -> MP4 (H.264 + the speech as AAC), or nowhere.

The video goes to a hidden temporary file beside ``output`` and is renamed at the end; any failure (or a
cancel) removes it, so a failed run never leaves a partial file at ``output``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from tqdm import tqdm

from ditto_research.constants import FPS
from ditto_research.pipeline.stages import FrameImage
from ditto_research.render.writer import VideoWriter

__all__ = ["write_frames"]


def write_frames(
    frames: Iterable[FrameImage],
    output: str | Path | None,
    audio: str | Path | None,
    *,
    num_frames: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
    on_frame: Callable[[FrameImage], None] | None = None,
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
