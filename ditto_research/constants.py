"""Numbers fixed by the model and its checkpoints, defined once (everything else is config)."""

from __future__ import annotations

SAMPLE_RATE = 16000
"""Audio sample rate (Hz) of the speech encoder and every audio path."""

FPS = 25
"""Video frame rate: one frame per 40 ms of audio (two HuBERT frames)."""

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
"""640 audio samples per video frame."""

MOTION_DIM = 265
"""Width of one frame of motion: scale 1, pitch / yaw / roll 66 bins each, t 3, exp 63."""

AUDIO_FEATURE_DIM = 1024
"""HuBERT-large feature width (one row per video frame after 50 -> 25 Hz)."""

EMOTION_DIM = 8
"""Emotion condition width (0 angry, 1 disgust, 2 fear, 3 happy, 4 neutral, 5 sad, 6 surprise, 7 contempt)."""

EYE_OPEN_DIM = 2
"""Eye openness condition width (left, right)."""

EYE_BALL_DIM = 6
"""Eye ball movement condition width."""

SOURCE_KP_DIM = 63
"""Source keypoint condition width (21 keypoints x 3)."""

__all__ = [
    "AUDIO_FEATURE_DIM",
    "EMOTION_DIM",
    "EYE_BALL_DIM",
    "EYE_OPEN_DIM",
    "FPS",
    "MOTION_DIM",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "SOURCE_KP_DIM",
]
