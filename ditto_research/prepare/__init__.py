"""Training data from talking videos (issue #21, in progress): :func:`~ditto_research.prepare.clip.
prepare_video` turns one video into prepared clips (:mod:`ditto_research.data`) with inference's engine."""

from ditto_research.prepare.clip import MIN_FRAMES, prepare_video

__all__ = ["MIN_FRAMES", "prepare_video"]
