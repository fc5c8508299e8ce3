"""The preparation job: a list of videos -> a prepared dataset, resumable, in shards and worker processes.

    sources = read_sources("videos/")                  # a folder, a .csv or a .txt list
    summary = run_prepare(cfg)                         # cfg: PrepareConfig

Per source (one video, or one time range of it) :func:`prepare_source` runs
:func:`~ditto_research.prepare.video.prepare_segments`, writes each kept clip's file (and a thumbnail) as soon
as it is finished, and returns the source's record: kept clips, skipped stretches with their reasons, the
cost per stage. The job's single writer (:class:`~ditto_research.data.dataset.DatasetWriter`) records it in
the shard's part and merges the manifest. A source that fails as a whole (no audio, undecodable, too short)
is recorded as skipped with its reason, and the job goes on; a job where every source failed exits 2.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ditto_research.atomic import write_atomically
from ditto_research.constants import FPS
from ditto_research.data.dataset import DatasetWriter, save_entry
from ditto_research.errors import DittoError, InputError
from ditto_research.media.ffmpeg import find_ffmpeg, header_args, run
from ditto_research.memory import peak_rss_mb
from ditto_research.pipeline.engine import Engine
from ditto_research.prepare.config import VIDEO_SUFFIXES, PrepareConfig
from ditto_research.prepare.video import (
    ClassifierEmotion,
    EmotionSource,
    LabelEmotion,
    PreparedSegment,
    PrepareSettings,
    SkippedSegment,
    VideoStats,
    prepare_segments,
)
from ditto_research.user_files import list_path, read_csv, read_text

log = logging.getLogger(__name__)

__all__ = ["PrepareSummary", "Source", "prepare_source", "read_sources", "run_prepare"]

_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Source:
    """One entry of the video list: ``video`` (or its ``start``..``end`` seconds), its clip-id stem ``id``,
    an ``emotion`` label (for ``prepare.emotion=label``) and its position ``order`` in the whole list."""

    id: str
    video: Path
    order: int
    emotion: str | None = None
    start: float | None = None
    end: float | None = None

    def describe(self) -> str:
        if self.start is None and self.end is None:
            return str(self.video)
        return f"{self.video} [{self.start or 0:g} s - {'end' if self.end is None else f'{self.end:g} s'}]"


@dataclass(frozen=True)
class ListProblem:
    """An entry of the list (or a folder) that names nothing usable, and why."""

    what: str
    reason: str


def _clip_stem(text: str) -> str:
    stem = _ID_CHARS.sub("_", text).strip("._-") or "video"
    return stem[:120]


def _walk_videos(folder: Path, problems: list[ListProblem]) -> list[Path]:
    found = []

    def unreadable(error: OSError) -> None:
        problems.append(ListProblem(str(error.filename), f"unreadable folder ({error.strerror})"))

    for root, dirs, files in os.walk(folder, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return found


def _seconds(value: str, column: str, where: str) -> float | None:
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise InputError(f"{where}: {column}={value!r} is not a number of seconds") from None
    if not np.isfinite(seconds) or seconds < 0:
        raise InputError(f"{where}: {column}={value!r} must be a number of seconds >= 0")
    return seconds


def read_sources(spec: str | Path) -> tuple[list[Source], list[ListProblem]]:
    """The sources a ``videos=`` value names, in order, with unique ids, and the entries that name nothing
    usable (reported, not fatal).

    Raises:
        InputError: the folder or list does not exist, cannot be read, or a list is malformed (one line).
    """
    path = Path(spec).expanduser()
    problems: list[ListProblem] = []
    rows: list[dict[str, Any]] = []
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise InputError(f"videos={path} is a folder that cannot be read; check its permissions")
        for video in _walk_videos(path, problems):
            rows.append({"video": video, "id": video.relative_to(path).with_suffix("").as_posix()})
        if not rows and not problems:
            suffixes = " ".join(VIDEO_SUFFIXES)
            raise InputError(
                f"videos={path} holds no video files ({suffixes}); give a folder of videos or a list"
            )
    elif path.is_file():
        what = f"video list {path}"
        if path.suffix.lower() == ".csv":
            header, records = read_csv(path, what)
            if "video" not in header:
                raise InputError(
                    f"{what} has no `video` column (columns: {', '.join(header) or 'none'}); add one "
                    "(optional: id, emotion, start, end)"
                )
            unknown = sorted(set(header) - {"video", "id", "emotion", "start", "end"})
            if unknown:
                raise InputError(
                    f"{what} has unknown columns {', '.join(unknown)}; use video, id, emotion, start, end"
                )
        elif path.suffix.lower() == ".txt":
            lines = read_text(path, what).splitlines()
            records = [{"video": line.strip()} for line in lines if line.strip() and not line.startswith("#")]
        else:
            raise InputError(
                f"videos={path} is neither a folder nor a .csv / .txt list; give a folder of videos or a list"
            )
        for number, record in enumerate(records, start=2 if path.suffix.lower() == ".csv" else 1):
            where = f"{what} line {number}"
            file = list_path(record.get("video") or "", path)
            if file is None:
                raise InputError(f"{where} has an empty `video`; give a path (relative to the list)")
            start = _seconds(record.get("start"), "start", where)
            end = _seconds(record.get("end"), "end", where)
            if start is not None and end is not None and end <= start:
                raise InputError(f"{where}: end={end:g} must be after start={start:g}")
            stem = record.get("id") or file.with_suffix("").name
            if start is not None or end is not None:
                stem = record.get("id") or f"{stem}_{start or 0:g}-{'end' if end is None else f'{end:g}'}"
            rows.append(
                {"video": file, "id": stem, "emotion": (record.get("emotion") or "").strip() or None}
                | {"start": start, "end": end}
            )
    else:
        raise InputError(f"videos={path} does not exist; give a folder of videos or a .csv / .txt list")
    sources, seen = [], set()
    for order, row in enumerate(rows):
        stem = _clip_stem(str(row["id"]))
        unique, k = stem, 2
        while unique in seen:
            unique, k = f"{stem}-{k}", k + 1
        seen.add(unique)
        sources.append(
            Source(unique, row["video"], order, row.get("emotion"), row.get("start"), row.get("end"))
        )
    return sources, problems


def _duration_s(video: Path) -> float | None:
    """The container's duration (cheap: the header only), for the progress bar's total."""
    try:
        text = run(header_args(find_ffmpeg(), video)).stderr.decode("utf-8", errors="replace")
    except DittoError:
        return None
    match = _DURATION.search(text)
    return int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3)) if match else None


def _expected_frames(source: Source) -> int:
    duration = _duration_s(source.video) if source.video.is_file() else None
    if duration is None:
        return 0
    end = duration if source.end is None else min(source.end, duration)
    return max(int(round((end - (source.start or 0.0)) * FPS)), 0)


def _stats_of(array: np.ndarray) -> dict[str, float]:
    values = array.astype(np.float64).reshape(-1)
    return {
        "count": int(values.size),
        "sum": float(values.sum()),
        "sumsq": float(np.square(values).sum()),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def _emotion_for(cfg: PrepareConfig, source: Source, classifier: EmotionSource | None) -> EmotionSource:
    if cfg.prepare.emotion == "classifier":
        assert classifier is not None
        return classifier
    if cfg.prepare.emotion == "label" and source.emotion is not None:
        return LabelEmotion(int(source.emotion) if source.emotion.isdigit() else source.emotion)
    return LabelEmotion("none")


def _check_label(source: Source) -> None:
    from ditto_research.motion.conditions import emotion_vector

    if source.emotion is None:
        return
    try:
        emotion_vector([int(source.emotion) if source.emotion.isdigit() else source.emotion])
    except (DittoError, ValueError, IndexError) as e:
        raise InputError(f"emotion {source.emotion!r} of {source.describe()} is not a label: {e}") from e


def prepare_source(
    engine: Engine,
    cfg: PrepareConfig,
    source: Source,
    writer_folder: Path,
    save: Callable[[Any], dict[str, Any]],
    emotion: EmotionSource,
    on_frame: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Prepare one source: (its record, the manifest entries of its kept clips, files already written by
    ``save``). Input problems of the whole source become a skipped record; bugs propagate."""
    settings = PrepareSettings(
        min_frames=cfg.prepare.min_frames,
        max_frames=cfg.prepare.max_frames,
        flip=cfg.prepare.flip,
        batch_size=cfg.prepare.batch_size,
        cut_threshold=cfg.prepare.cut_threshold,
    )
    stats = VideoStats()
    record: dict[str, Any] = {
        "id": source.id,
        "order": source.order,
        "video": str(source.video),
        "range": [source.start, source.end],
        "status": "done",
        "skipped": [],
    }
    entries: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        if cfg.prepare.emotion == "label":
            _check_label(source)
        for item in prepare_segments(
            engine,
            source.video,
            source.id,
            emotion=emotion,
            settings=settings,
            start_s=source.start,
            end_s=source.end,
            stats=stats,
            on_frame=on_frame,
        ):
            if isinstance(item, SkippedSegment):
                record["skipped"].append(asdict(item) | {"frames": item.frames})
                log.info(
                    "%s: frames %d-%d skipped: %s (%s)",
                    source.id,
                    item.start,
                    item.stop,
                    item.reason,
                    item.detail,
                )
                continue
            entries += _save_segment(item, save, writer_folder)
    except InputError as e:
        if entries:  # the clips finished before the problem are good: keep them, say where it stopped
            record["skipped"].append(
                {"source": str(source.video), "start": stats.frames, "stop": stats.frames, "frames": 0}
                | {"reason": "stopped early", "detail": str(e)}
            )
            log.warning("%s: stopped at frame %d: %s", source.describe(), stats.frames, e)
        else:
            record.update(status="skipped", reason=str(e))
            log.warning("skipped %s: %s", source.describe(), e)
    record["frames"] = stats.frames
    record["kept_frames"] = sum(int(e["frames"]) for e in entries if not e.get("flipped"))
    record["stats"] = {
        "seconds": {k: round(v, 4) for k, v in stats.seconds.items()},
        "total_s": round(time.perf_counter() - started, 3),
        "decoders": stats.decoders,
        "faces_seen": stats.faces_seen,
        "peak_rss_mb": peak_rss_mb(),
    }
    if record["status"] == "done" and not entries:
        counts = Counter(item["reason"] for item in record["skipped"])
        found = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())) or "no frames"
        details = sorted({item["detail"] for item in record["skipped"] if item["reason"] == "left out"})
        record.update(
            status="skipped",
            reason=f"no segment of at least {cfg.prepare.min_frames} frames with one face became a clip "
            f"({found}{': ' + details[0] if details else ''})",
        )
    return record, entries


def _save_segment(
    segment: PreparedSegment, save: Callable[[Any], dict[str, Any]], folder: Path
) -> list[dict]:
    entries = []
    for clip in segment.clips:
        entry = save(clip)
        entry["stats"] = {name: _stats_of(clip[name]) for name in clip}
        entries.append(entry)
    thumb = folder / "thumbs" / f"{segment.clips[0].clip_id}.jpg"
    thumb.parent.mkdir(exist_ok=True)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(segment.thumbnail, cv2.COLOR_RGB2BGR))
    if ok:
        write_atomically(thumb, lambda f: f.write(data.tobytes()))
    return entries


# ---- worker processes ----------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _face_models(cfg: PrepareConfig) -> str | None:
    """face=mediapipe's model folder, resolved in the parent (a first use fetches the files once, not once
    per worker); None for the front-ends that do not use it."""
    from ditto_research.face.tflite_models import face_models_dir

    if cfg.face.name == "mediapipe":
        return str(face_models_dir())
    if cfg.face.name == "auto":  # mediapipe only without the official files: the workers decide
        with contextlib.suppress(DittoError):  # a worker that needs them reports the same error itself
            return str(face_models_dir())
    return None


def _worker_start(cfg: PrepareConfig, progress: Any, face_models: str | None) -> None:
    if face_models is not None:  # the parent resolved (fetched) them once: no worker fetches on its own
        from ditto_research.face.tflite_models import FACE_MODELS_ENV

        os.environ[FACE_MODELS_ENV] = face_models
    _WORKER.update(cfg=cfg, engine=Engine(cfg), progress=progress, emotion=_classifier(cfg))


def _worker_run(source: Source) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    cfg: PrepareConfig = _WORKER["cfg"]
    folder = Path(cfg.out).expanduser()
    emotion = _emotion_for(cfg, source, _WORKER["emotion"])
    save = functools.partial(save_entry, folder)  # the files; the manifest stays the job's
    return prepare_source(_WORKER["engine"], cfg, source, folder, save, emotion, _WORKER["progress"].put)


def _classifier(cfg: PrepareConfig) -> EmotionSource | None:
    if cfg.prepare.emotion != "classifier":
        return None
    from ditto_research.prepare.emotion import EmotionClassifier

    assert cfg.prepare.emotion_model is not None
    return ClassifierEmotion(EmotionClassifier(cfg.prepare.emotion_model))


# ---- the job -------------------------------------------------------------------------------------------


@dataclass
class PrepareSummary:
    """What a job did (also printed, and the report's source)."""

    folder: Path
    sources: int = 0
    done_before: int = 0
    kept: int = 0
    skipped: int = 0
    clips: int = 0
    frames_kept: int = 0
    seconds: float = 0.0
    problems: list[ListProblem] = field(default_factory=list)
    report: Path | None = None  # report.md, when the job wrote one

    @property
    def all_failed(self) -> bool:
        return (self.sources - self.done_before) > 0 and self.kept == 0


def _identity_and_config(cfg: PrepareConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    identity = cfg.identity()
    config = {"identity_hash": cfg.identity_hash(), **identity, "videos": str(cfg.videos)}
    return identity, config


def run_prepare(cfg: PrepareConfig, engine: Engine | None = None) -> PrepareSummary:
    """Run the job ``cfg`` describes (see the module docstring); ``engine``: reuse one (tests, workers=1)."""
    started = time.perf_counter()
    sources, problems = read_sources(cfg.videos)
    if cfg.prepare.max_videos is not None:
        sources = sources[: cfg.prepare.max_videos]
    index, count = cfg.prepare.shard_index()
    mine = sources[index::count]
    folder = Path(cfg.out).expanduser()
    identity, config = _identity_and_config(cfg)
    writer = DatasetWriter(folder, config, identity=identity, shard=(index, count))
    todo = [s for s in mine if not writer.done(s.id)]
    summary = PrepareSummary(folder, len(mine), len(mine) - len(todo), problems=problems)
    for problem in problems:
        log.warning("skipped %s: %s", problem.what, problem.reason)
    if summary.done_before:
        print(f"{summary.done_before} of {len(mine)} videos already prepared in {folder}: skipped")
    total = sum(_expected_frames(s) for s in todo) if cfg.progress else 0
    bar = tqdm(total=total or None, unit="frame", desc="prepare", disable=not cfg.progress, smoothing=0.05)

    def record(result: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
        rec, entries = result
        writer.finish_source(rec, entries)
        if rec["status"] == "done":
            summary.kept += 1
            summary.clips += len(entries)
            summary.frames_kept += rec["kept_frames"]
        else:
            summary.skipped += 1
        bar.set_postfix(clips=summary.clips, skipped=summary.skipped, refresh=False)

    with bar:
        if cfg.prepare.workers == 1 or len(todo) <= 1:
            own = engine is None
            engine = engine or Engine(cfg)
            try:
                classifier = _classifier(cfg)
                for source in todo:
                    emotion = _emotion_for(cfg, source, classifier)
                    record(prepare_source(engine, cfg, source, folder, writer.save, emotion, bar.update))
            finally:
                if own:
                    engine.close()
        else:
            _run_workers(cfg, todo, record, bar)
    summary.seconds = time.perf_counter() - started
    if cfg.prepare.report:
        from ditto_research.prepare.report import write_report

        summary.report = write_report(folder)[0]
    return summary


def _run_workers(
    cfg: PrepareConfig,
    todo: list[Source],
    record: Callable[[tuple[dict[str, Any], list[dict[str, Any]]]], None],
    bar: tqdm,
) -> None:
    context = multiprocessing.get_context("spawn")
    progress = context.Queue()
    stop = threading.Event()

    def forward() -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Empty):
                bar.update(progress.get(timeout=0.2))

    forwarder = threading.Thread(target=forward, name="prepare-progress", daemon=True)
    forwarder.start()
    try:
        with ProcessPoolExecutor(
            cfg.prepare.workers,
            mp_context=context,
            initializer=_worker_start,
            initargs=(cfg, progress, _face_models(cfg)),
        ) as pool:
            pending: set[Future] = set()
            queue_iter: Iterator[Source] = iter(todo)
            for source in queue_iter:
                pending.add(pool.submit(_worker_run, source))
                if len(pending) >= cfg.prepare.workers * 2:
                    break
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    record(future.result())
                for source in queue_iter:
                    pending.add(pool.submit(_worker_run, source))
                    if len(pending) >= cfg.prepare.workers * 2:
                        break
    finally:
        stop.set()
        forwarder.join()
