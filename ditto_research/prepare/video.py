"""One talking video -> prepared training clips, computed by the code inference runs.

Real footage is not pre-cut, so one front-to-back pass does everything: the frames at 25 fps
(:func:`~ditto_research.media.source.stream_video`, any source rate resampled, variable included) and, in
step, the audio track at 16 kHz (:class:`~ditto_research.audio.stream.AudioStream`, 640 samples per frame);
per frame

1. a shot-cut test (:class:`~ditto_research.prepare.cuts.CutDetector`);
2. the face front-end of registration (:func:`~ditto_research.pipeline.registration.crop_frame`): the face
   tracked from the previous frame (detected again after a cut or when lost), the 512 crop, the 478
   landmarks -> ``eye_open`` (2), ``eye_ball`` (3, 2);
3. the motion extractor on the 256 crop, ``batch_size`` frames at a time -> ``motion`` (265: scale - 1, the
   raw 66-bin pitch / yaw / roll logits, t, exp: :func:`~ditto_research.motion.format.source_motion_vector`)
   and ``canonical_kp`` (63);
4. with ``flip``, the same for the mirrored frame (its own track).

The video is cut into segments at shot cuts, where the face is lost or jumps (found again elsewhere), where
the audio ends, and every ``max_frames`` frames; a segment of at least ``min_frames`` frames (81: one
80-frame training window and the frame before it) becomes a clip — its speech features computed on its own
audio by the engine's encoder (as if the footage had been cut there), its emotion rows by ``emotion`` — and
the rest is reported with a reason. A clip never holds a frame without a face (the released code drops a
clip whose face is found in under 60 % of its frames; splitting where the face is lost is stricter).
Memory holds one segment at most: it does not grow with the video's length.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from ditto_research.audio.stream import AudioStream
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.data.clip import PreparedClip
from ditto_research.errors import InputError
from ditto_research.face.frontend import FaceLandmarks, box_iou
from ditto_research.media.source import stream_video
from ditto_research.motion.conditions import EMOTION_LABELS, emotion_vector
from ditto_research.motion.format import source_motion_vector
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.registration import FrameCrop, crop_frame, motion_infos
from ditto_research.prepare.cuts import CutDetector
from ditto_research.prepare.emotion import EmotionClassifier, EmotionTrack, face_box_crop

__all__ = [
    "MIN_FRAMES",
    "ClassifierEmotion",
    "LabelEmotion",
    "EmotionSource",
    "PreparedSegment",
    "PrepareSettings",
    "SkippedSegment",
    "VideoStats",
    "prepare_segments",
    "prepare_video",
]

MIN_FRAMES = 81  # one 80-frame training window and the frame before it
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
THUMBNAIL = 128
# A face found again after the track was lost counts as the same face only when its box overlaps the last
# one this much (intersection over union); otherwise the segment ends ("face jump").
SAME_FACE_IOU = 0.3


@dataclass(frozen=True)
class PrepareSettings:
    """How videos are cut and what is computed (the ``prepare.*`` keys of the same names)."""

    min_frames: int = MIN_FRAMES
    max_frames: int = 3000
    flip: bool = False
    batch_size: int = 1
    cut_threshold: float | None = None  # None: the detector's default


class EmotionFeed(Protocol):
    def add(self, index: int, crop: FrameCrop) -> None: ...

    def finish(self, frames: int) -> np.ndarray: ...


class EmotionSource(Protocol):
    """Where a segment's (n, 8) emotion rows come from: :meth:`feed` per segment, fed each frame's crop (in
    order from 0), then ``finish(n)``."""

    @property
    def description(self) -> str: ...

    def feed(self) -> EmotionFeed: ...


@dataclass(frozen=True)
class _ConstantFeed:
    row: np.ndarray

    def add(self, index: int, crop: FrameCrop) -> None:
        pass

    def finish(self, frames: int) -> np.ndarray:
        return np.repeat(self.row[None], frames, axis=0)


@dataclass(frozen=True)
class LabelEmotion:
    """Every frame the probabilities inference builds for ``label`` (0..7 or a name); ``none`` = neutral,
    recorded as ``none``."""

    label: str | int = "none"

    @property
    def description(self) -> str:
        return "none (neutral)" if self.label == "none" else f"label {self.label}"

    def feed(self) -> EmotionFeed:
        label = "neutral" if self.label == "none" else self.label
        return _ConstantFeed(emotion_vector([label]).astype(np.float32))


class _ClassifierFeed:
    def __init__(self, track: EmotionTrack) -> None:
        self.track = track

    def add(self, index: int, crop: FrameCrop) -> None:
        if not self.track.wants(index):
            self.track.add(index, None)
            return
        # the face as the landmarker sees it in the 512 crop (its landmarks are normalised to the crop)
        height, width = crop.crop512.shape[:2]
        points = crop.lmk478.reshape(-1, 3)[:, :2] * np.array([width, height], dtype=np.float32)
        box = (*points.min(axis=0), *points.max(axis=0))
        self.track.add(index, face_box_crop(crop.crop512, box))

    def finish(self, frames: int) -> np.ndarray:
        return self.track.finish(frames)


@dataclass(frozen=True)
class ClassifierEmotion:
    """An emotion model's probabilities, as the released code computes them (:mod:`ditto_research.prepare.
    emotion`: every 5th frame, the face in the 512 crop, linear interpolation between): the face box is the
    bounding box of the 478 landmarks in the crop (the original's MTCNN box is not run)."""

    classifier: EmotionClassifier
    batch_size: int = 16

    @property
    def description(self) -> str:
        return f"classifier {Path(self.classifier.path).name}"

    def feed(self) -> EmotionFeed:
        return _ClassifierFeed(EmotionTrack(self.classifier, batch_size=self.batch_size))


@dataclass(frozen=True)
class SkippedSegment:
    """Frames ``start``..``stop`` (at 25 fps, from the start of the range read) that made no clip, and why:
    ``reason`` is a short category (the report counts them), ``detail`` the specifics."""

    source: str
    start: int
    stop: int
    reason: str
    detail: str = ""

    @property
    def frames(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class PreparedSegment:
    """A kept segment: its clip, the mirrored clip with ``flip``, and a small face thumbnail (RGB)."""

    clips: list[PreparedClip]
    thumbnail: np.ndarray


@dataclass
class VideoStats:
    """What one video's pass cost: seconds per stage, frames decoded, decoder processes started."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    frames: int = 0
    decoders: int = 0
    faces_seen: int = 0

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds


@dataclass
class _Track:
    """One view's face track (the frame, or its mirror) and the segment's rows for it."""

    previous: FaceLandmarks | None = None
    rows: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    face_sizes: list[float] = field(default_factory=list)
    pending: list[FrameCrop] = field(default_factory=list)

    def clear(self) -> None:
        self.rows = defaultdict(list)
        self.face_sizes = []
        self.pending = []


@dataclass
class _Segment:
    start: int
    audio: list[np.ndarray] = field(default_factory=list)
    rms: list[float] = field(default_factory=list)
    frames: int = 0
    thumbnail: np.ndarray | None = None
    emotion: EmotionFeed | None = None
    faces_seen: int = 1


class _Timer:
    def __init__(self, stats: VideoStats, stage: str) -> None:
        self.stats, self.stage = stats, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.stats.add(self.stage, time.perf_counter() - self.start)


def _timed_frames(frames: Iterator[np.ndarray], stats: VideoStats) -> Iterator[np.ndarray]:
    while True:
        start = time.perf_counter()
        frame = next(frames, None)
        stats.add("decode", time.perf_counter() - start)
        if frame is None:
            return
        yield frame


def _too_short(what: str, frames: int, min_frames: int) -> str:
    return (
        f"{what} holds {frames} frames at {FPS} fps ({frames / FPS:.2f} s); a training clip needs at least "
        f"{min_frames} ({min_frames / FPS:.2f} s)"
    )


def prepare_segments(
    engine: Engine,
    video: str | Path,
    clip_id: str,
    *,
    emotion: EmotionSource | None = None,
    settings: PrepareSettings | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    stats: VideoStats | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> Iterator[PreparedSegment | SkippedSegment]:
    """The segments of ``video`` (optionally only ``start_s`` .. ``end_s``), in order, as they are finished.

    Kept segments are clips ``<clip_id>_f<first frame>`` (and ``..._flip``); ``stats`` (if given) collects
    the cost per stage; ``on_frame(1)`` is called per decoded frame (progress).

    Raises:
        InputError: before any frame is registered, for the whole video: missing or undecodable, no video
            stream, no audio track, or a range shorter than ``min_frames``.
    """
    video = Path(video).expanduser()
    settings = settings or PrepareSettings()
    emotion = emotion or LabelEmotion("none")
    stats = stats if stats is not None else VideoStats()
    duration = None if end_s is None else end_s - (start_s or 0.0)
    stream = stream_video(video, engine.cfg.face.max_size, fps=FPS, start_s=start_s, duration_s=duration)
    stats.decoders += 1
    try:
        if not stream.has_audio:
            raise InputError(f"{video} has no audio track; a training clip needs the speech that drives it")
        available = stream.duration_s
        if available is not None:
            available = min(available - (start_s or 0.0), duration if duration is not None else np.inf)
            if available * FPS < settings.min_frames - 0.5:
                raise InputError(_too_short(str(video), int(round(available * FPS)), settings.min_frames))
        audio = AudioStream(video, SAMPLE_RATE, start_s=start_s, duration_s=duration)
        stats.decoders += 1
    except BaseException:
        stream.close()
        raise
    with stream, audio:
        yield from _Preparer(engine, video, clip_id, emotion, settings, stats, on_frame).run(stream, audio)


class _Preparer:
    def __init__(
        self,
        engine: Engine,
        video: Path,
        clip_id: str,
        emotion: EmotionSource,
        settings: PrepareSettings,
        stats: VideoStats,
        on_frame: Callable[[int], None] | None,
    ) -> None:
        self.engine, self.video, self.clip_id = engine, video, clip_id
        self.emotion, self.settings, self.stats, self.on_frame = emotion, settings, stats, on_frame
        self.tracks = [_Track(), _Track()] if settings.flip else [_Track()]
        self.cuts = (
            CutDetector() if settings.cut_threshold is None else CutDetector(threshold=settings.cut_threshold)
        )
        self.segment: _Segment | None = None
        self.no_face: tuple[int, str] | None = None  # first frame of the current faceless run, its message

    def run(self, stream: Any, audio: AudioStream) -> Iterator[PreparedSegment | SkippedSegment]:
        index = -1
        for index, rgb in enumerate(_timed_frames(stream.frames(), self.stats)):
            self.stats.frames += 1
            if self.on_frame is not None:
                self.on_frame(1)
            with _Timer(self.stats, "audio"):
                samples = audio.read(SAMPLES_PER_FRAME)
            if samples.size == 0:  # the audio track ends before the video
                yield from self._close(index, "the audio ended")
                yield SkippedSegment(
                    str(self.video), index, index + 1, "no audio", "the audio track ends here"
                )
                break
            with _Timer(self.stats, "cuts"):
                cut = self.cuts.update(rgb)
            if cut:
                yield from self._close(index, "a shot cut")
                for track in self.tracks:
                    track.previous = None
            crops, problem = self._crop(rgb, index)
            if crops is None:
                yield from self._close(index, "the face was lost")
                if self.no_face is None:
                    self.no_face = (index, problem)
                continue
            yield from self._end_faceless(index)
            if self.segment is not None and self._jumped(crops):
                yield from self._close(index, "the face jumped")
            if self.segment is None:
                self.segment = _Segment(index, emotion=self.emotion.feed())
            self._add(crops, samples)
            if self.segment.frames >= self.settings.max_frames:
                yield from self._close(index + 1, "the length cap (prepare.max_clip_s)")
        yield from self._end_faceless(index + 1)
        yield from self._close(index + 1, "the end of the video")

    def _crop(self, rgb: np.ndarray, index: int) -> tuple[list[FrameCrop] | None, str]:
        views = [rgb, np.ascontiguousarray(rgb[:, ::-1])] if self.settings.flip else [rgb]
        crops = []
        with _Timer(self.stats, "face"):
            for track, view, side in zip(self.tracks, views, ("", " (mirrored)")):
                label = f"frame {index}{side} of {self.video}"
                try:
                    crops.append(
                        crop_frame(
                            view, track.previous, self.engine.frontend, self.engine.cfg.face, label, index
                        )
                    )
                except InputError as e:
                    for other in self.tracks:
                        other.previous = None
                    return None, str(e)
        return crops, ""

    def _jumped(self, crops: list[FrameCrop]) -> bool:
        for track, crop in zip(self.tracks, crops):
            if (
                track.previous is not None
                and box_iou(track.previous.box, crop.face.box[None])[0] < SAME_FACE_IOU
            ):
                return True
        return False

    def _add(self, crops: list[FrameCrop], samples: np.ndarray) -> None:
        segment = self.segment
        assert segment is not None
        segment.frames += 1
        segment.audio.append(samples)
        segment.rms.append(float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))))
        segment.faces_seen = max(segment.faces_seen, crops[0].face.num_faces)
        self.stats.faces_seen = max(self.stats.faces_seen, crops[0].face.num_faces)
        if segment.thumbnail is None:
            segment.thumbnail = cv2.resize(
                crops[0].crop256, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA
            )
        with _Timer(self.stats, "emotion"):
            assert segment.emotion is not None
            segment.emotion.add(segment.frames - 1, crops[0])
        for track, crop in zip(self.tracks, crops):
            track.previous = crop.face
            track.face_sizes.append(crop.face.size)
            track.rows["eye_open"].append(crop.eye_open.reshape(2))
            track.rows["eye_ball"].append(crop.eye_ball.reshape(3, 2))
            track.pending.append(crop)
            if len(track.pending) >= self.settings.batch_size:
                self._flush(track)

    def _flush(self, track: _Track) -> None:
        if not track.pending:
            return
        with _Timer(self.stats, "motion"):
            infos = motion_infos(
                self.engine.networks.motion_extractor, [c.crop256 for c in track.pending], self.engine.device
            )
        for info in infos:
            track.rows["motion"].append(source_motion_vector(info))
            track.rows["canonical_kp"].append(info["kp"].reshape(-1))
        track.pending = []

    def _end_faceless(self, stop: int) -> Iterator[SkippedSegment]:
        if self.no_face is not None:
            start, problem = self.no_face
            self.no_face = None
            yield SkippedSegment(str(self.video), start, stop, "no usable face", problem)

    def _close(self, stop: int, why: str) -> Iterator[PreparedSegment | SkippedSegment]:
        segment, self.segment = self.segment, None
        if segment is None:
            return
        try:
            if segment.frames < self.settings.min_frames:
                yield SkippedSegment(
                    str(self.video),
                    segment.start,
                    segment.start + segment.frames,
                    "short segment",
                    f"{segment.frames} frames < {self.settings.min_frames}, ended by {why}",
                )
                return
            try:
                clip = self._clip(segment, why)
            except InputError as e:  # e.g. the emotion model found too few faces in it
                yield SkippedSegment(
                    str(self.video), segment.start, segment.start + segment.frames, "left out", str(e)
                )
                return
            yield clip
        finally:
            for track in self.tracks:
                track.clear()

    def _clip(self, segment: _Segment, why: str) -> PreparedSegment:
        for track in self.tracks:
            self._flush(track)
        audio = np.concatenate(segment.audio)
        with _Timer(self.stats, "audio_features"):
            features = self.engine.speech_features(
                audio, f"the audio of {self.video} from frame {segment.start}"
            )
        frames = min(segment.frames, features.shape[0])
        assert segment.emotion is not None
        with _Timer(self.stats, "emotion"):
            emotion = segment.emotion.finish(segment.frames)[:frames]
        base_id = f"{self.clip_id}_f{segment.start:06d}"
        meta: dict[str, Any] = {
            "source": str(self.video),
            "segment": [segment.start, segment.start + frames],
            "ended_by": why,
            "fps": float(FPS),
            "faces_seen": segment.faces_seen,
            "emotion_source": self.emotion.description,
            "emotion_labels": list(EMOTION_LABELS),
        }
        clips = []
        for track, suffix in zip(self.tracks, ("", "_flip")):
            arrays = {name: np.stack(rows[:frames]) for name, rows in track.rows.items()}
            arrays["audio_features"] = features[:frames]
            arrays["emotion"] = emotion
            arrays["audio_rms"] = np.asarray(segment.rms[:frames], dtype=np.float32)
            sizes = np.asarray(track.face_sizes[:frames])
            clip_meta = {
                **meta,
                "flipped": bool(suffix),
                "face_size_px": [float(sizes.min()), float(sizes.max())],
            }
            what = f"the prepared clip of {self.video} from frame {segment.start}"
            clips.append(PreparedClip(base_id + suffix, arrays, clip_meta, what=what))
        assert segment.thumbnail is not None
        return PreparedSegment(clips, segment.thumbnail)


def prepare_video(
    engine: Engine,
    video: str | Path,
    clip_id: str,
    *,
    emotion: str | int = "none",
    flip: bool = False,
    stats: VideoStats | None = None,
) -> list[PreparedClip]:
    """Every clip of ``video`` (with ``flip``, each followed by its mirrored copy), emotion ``"none"`` or a
    label: :func:`prepare_segments` without the skipped stretches (for a script or a notebook; the
    ``prepare`` app records those too).

    Raises:
        InputError: as :func:`prepare_segments`, or no segment of ``min_frames`` frames with a face.
    """
    clips: list[PreparedClip] = []
    skipped: list[SkippedSegment] = []
    for item in prepare_segments(
        engine,
        video,
        clip_id,
        emotion=LabelEmotion(emotion),
        settings=PrepareSettings(flip=flip),
        stats=stats,
    ):
        if isinstance(item, SkippedSegment):
            skipped.append(item)
        else:
            clips += item.clips
    if not clips:
        reasons = "; ".join(f"frames {s.start}-{s.stop}: {s.reason} ({s.detail})" for s in skipped[:3])
        raise InputError(f"{video} gave no clip of at least {MIN_FRAMES} frames with a face: {reasons}")
    return clips
