"""One talking video -> prepared training clip(s), computed by the code inference runs.

Per video, one decode pass at 25 fps (:func:`~ditto_research.media.source.stream_video`, any source rate
resampled) and its audio track (16 kHz mono); per frame, :func:`~ditto_research.pipeline.registration.
register_frame` — the face tracked from the previous frame with the engine's front-end, the 512 crop, the 478
landmarks, the motion extractor — gives what the training code stores:

- ``motion`` (265): the frame's keypoint info as the LMDM's vector (:func:`~ditto_research.motion.format.
  source_motion_vector`: scale - 1, the raw 66-bin pitch / yaw / roll logits, t, exp);
- ``canonical_kp`` (63): the extractor's canonical keypoints;
- ``eye_open`` (2) and ``eye_ball`` (3, 2): the eye attributes registration computes for a source;

and the engine's offline speech features (1024 per frame) for the audio. ``flip`` adds the mirrored copy
(every frame mirrored left-right and registered again; audio and emotion reused). Emotion: ``"none"`` records
neutral, a label (0..7 or a name) its probabilities as inference builds them
(:func:`~ditto_research.motion.conditions.emotion_vector`) — the same row for every frame.

Not here yet (issue #21): splitting at shot cuts and lost faces, per-clip time ranges, an emotion classifier,
the app, workers and shards, the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ditto_research.audio.io import load_audio, num_video_frames
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.data.clip import PreparedClip
from ditto_research.errors import InputError
from ditto_research.face.frontend import FaceLandmarks
from ditto_research.media.source import stream_video
from ditto_research.motion.conditions import EMOTION_LABELS, emotion_vector
from ditto_research.motion.format import source_motion_vector
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.registration import RegistrationRecord, register_frame

__all__ = ["MIN_FRAMES", "prepare_video"]

MIN_FRAMES = 81  # one 80-frame training window and the frame before it


@dataclass
class _Track:
    """Per-frame features of one pass (original or mirrored) and the face it tracks."""

    previous: FaceLandmarks | None = None
    rows: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {"motion": [], "canonical_kp": [], "eye_open": [], "eye_ball": []}
    )
    face_sizes: list[float] = field(default_factory=list)

    def add(self, record: RegistrationRecord) -> None:
        info = record.frame.x_s_info
        self.rows["motion"].append(source_motion_vector(info))
        self.rows["canonical_kp"].append(info["kp"].reshape(-1))
        self.rows["eye_open"].append(record.frame.eye_open.reshape(2))
        self.rows["eye_ball"].append(record.frame.eye_ball.reshape(3, 2))
        self.face_sizes.append(record.face.size)
        self.previous = record.face


def _too_short(video: Path, frames: int) -> str:
    return (
        f"{video} has {frames} frames at {FPS} fps ({frames / FPS:.2f} s with audio); a training clip "
        f"needs at least {MIN_FRAMES} (one {MIN_FRAMES - 1}-frame window and the frame before it)"
    )


def _emotion_rows(emotion: str | int, frames: int) -> tuple[np.ndarray, str]:
    if emotion == "none":
        label: str | int = "neutral"
        source = "none (neutral)"
    else:
        label = emotion
        source = f"label {emotion}"
    row = emotion_vector([label]).astype(np.float32)
    return np.repeat(row[None], frames, axis=0), source


def prepare_video(
    engine: Engine,
    video: str | Path,
    clip_id: str,
    *,
    emotion: str | int = "none",
    flip: bool = False,
    progress: bool = False,
) -> list[PreparedClip]:
    """The prepared clip of ``video`` (and its mirrored copy, ``clip_id + "_flip"``, with ``flip``).

    Raises:
        InputError: no audio track, a video shorter than :data:`MIN_FRAMES` frames at 25 fps, a frame without
            a usable face (naming the frame), or anything the engine's checks refuse.
    """
    video = Path(video).expanduser()
    audio = load_audio(video, SAMPLE_RATE)
    expected = num_video_frames(len(audio), SAMPLE_RATE, FPS)
    if expected < MIN_FRAMES:
        raise InputError(_too_short(video, expected))
    features = engine.speech_features(audio, f"the audio of {video}")
    stream = stream_video(video, engine.cfg.face.max_size, fps=FPS)
    tracks = [_Track(), _Track()] if flip else [_Track()]
    face, device = engine.cfg.face, engine.device
    extractor, frontend = engine.networks.motion_extractor, engine.frontend
    with (
        stream,
        tqdm(total=expected, desc=f"prepare {video.name}", unit="frame", disable=not progress) as bar,
    ):
        for index, rgb in enumerate(stream.frames()):
            views = [rgb, np.ascontiguousarray(rgb[:, ::-1])] if flip else [rgb]
            for track, view, side in zip(tracks, views, ("", " (mirrored)")):
                label = f"frame {index}{side} of {video}"
                record = register_frame(view, track.previous, frontend, extractor, face, device, label, index)
                track.add(record)
            bar.update()
    frames = min(stream.decoded, features.shape[0])
    if frames < MIN_FRAMES:
        raise InputError(_too_short(video, frames))
    emotion_rows, emotion_source = _emotion_rows(emotion, frames)
    meta: dict[str, Any] = {
        "source": str(video),
        "segment": [0, frames],
        "fps": float(FPS),
        "source_fps": stream.source_fps,
        "frames_decoded": stream.decoded,
        "audio_frames": int(features.shape[0]),
        "emotion_source": emotion_source,
        "emotion_labels": list(EMOTION_LABELS),
    }
    clips = []
    for track, suffix in zip(tracks, ("", "_flip")):
        arrays = {name: np.stack(rows[:frames]) for name, rows in track.rows.items()}
        arrays["audio_features"] = features[:frames]
        arrays["emotion"] = emotion_rows
        sizes = np.asarray(track.face_sizes[:frames])
        clip_meta = {
            **meta,
            "flipped": bool(suffix),
            "face_size_px": [float(sizes.min()), float(sizes.max())],
        }
        clips.append(PreparedClip(clip_id + suffix, arrays, clip_meta, what=f"the prepared clip of {video}"))
    return clips
