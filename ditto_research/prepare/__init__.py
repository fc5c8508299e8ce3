"""Training data from talking videos: ``python -m ditto_research.prepare videos=... out=...`` (the job:
:mod:`ditto_research.prepare.job`), one video's clips (:func:`~ditto_research.prepare.video.prepare_segments`,
:func:`~ditto_research.prepare.video.prepare_video`), all computed by inference's engine and written in the
format of :mod:`ditto_research.data`."""

from ditto_research.prepare.video import (
    MIN_FRAMES,
    PreparedSegment,
    PrepareSettings,
    SkippedSegment,
    VideoStats,
    prepare_segments,
    prepare_video,
)

__all__ = [
    "MIN_FRAMES",
    "PrepareSettings",
    "PreparedSegment",
    "SkippedSegment",
    "VideoStats",
    "prepare_segments",
    "prepare_video",
]
