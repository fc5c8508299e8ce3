"""The one way a clip is run: load and check the audio, register the source (timed), render it offline or
feed it through a stream, write the frames, and report what happened in one :class:`ClipReport`.

Everything that runs a whole clip goes through :func:`run_clip`: ``python -m ditto_research.infer`` (both
modes), :meth:`TalkingHeadSession.generate <ditto_research.pipeline.session.TalkingHeadSession.generate>`,
:meth:`StreamingSession.run_file <ditto_research.pipeline.online.StreamingSession.run_file>`, the evaluation's
clip renderer and ``benchmarks/offline_pipeline.py``. So a number means the same thing everywhere:

==================  ==========================================================================================
``seconds``         wall time of the whole clip once the networks are loaded: audio decode and checks,
                    registration, rendering, the closed video (what a user waits for per clip)
``register_s``      registering the source (face detection, crop, appearance features), inside ``seconds``
``render_s``        first item into the pipeline .. last frame written and the video closed
``fps``             ``frames / seconds`` (registration included)
``render_fps``      ``frames / render_s`` (the steady rate once the source is registered)
``real_time_factor``  ``seconds / audio_s`` (< 1: faster than real time)
``emit_s``          per frame: when it came out, from the start of rendering
``latency_s``       online: per frame, hand-over time - when its 40 ms of audio had been pushed
==================  ==========================================================================================
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ditto_research.audio.io import load_audio, num_video_frames
from ditto_research.config import InferConfig
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.media.writer import write_frames
from ditto_research.memory import peak_rss_mb
from ditto_research.pipeline.latency import LatencyReport
from ditto_research.pipeline.observers import PipelineObserver, StageTimer
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.pipeline.runner import PipelineRunner
from ditto_research.pipeline.stages import FrameImage

if TYPE_CHECKING:
    from ditto_research.pipeline.engine import Engine
    from ditto_research.pipeline.online import StreamingSession

__all__ = ["ClipReport", "offline_frames", "run_clip"]


@dataclass
class ClipReport:
    """What running one clip did and how long each part took (seconds unless named otherwise; the module
    docstring defines every number)."""

    output: Path | None
    frames: int
    audio_s: float
    seconds: float
    register_s: float
    render_s: float
    load_s: float = 0.0  # the engine's network load (once per engine, not part of ``seconds``)
    mode: str = "offline"
    realtime: bool = False  # online: audio fed at 1x wall-clock speed (latencies mean something only then)
    stage_ms_per_frame: dict[str, float] = field(default_factory=dict)
    stage_calls_s: dict[str, list[float]] = field(default_factory=dict)  # each stage's busy time per call
    emit_s: list[float] = field(default_factory=list)
    latency: LatencyReport | None = None  # online
    latency_s: list[float] = field(default_factory=list)  # online
    peak_rss_mb: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def render_fps(self) -> float:
        return self.frames / self.render_s if self.render_s > 0 else 0.0

    @property
    def real_time_factor(self) -> float:
        """Processing time / audio time (< 1: faster than real time; NaN without audio)."""
        return self.seconds / self.audio_s if self.audio_s > 0 else math.nan

    @property
    def first_frame_s(self) -> float | None:
        """Online: the first frame's latency; offline: when it came out, from the start of rendering."""
        if self.mode == "online":
            return self.latency_s[0] if self.latency_s else None
        return self.emit_s[0] if self.emit_s else None

    def summary(self) -> str:
        where = f" -> {self.output}" if self.output else ""
        head = (
            f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.2f} fps, "
            f"RTF {self.real_time_factor:.2f}; registration {self.register_s:.1f} s)"
        )
        if self.mode != "online":
            return head + where
        if not self.realtime:  # fed as fast as possible: latencies would measure the queue, not the stream
            return f"{head}; latency is measured with mode.realtime=true{where}"
        return f"{head}; {self.latency.summary() if self.latency else 'no frames'}{where}"


def offline_frames(
    engine: Engine, source: RegisteredSource, audio: np.ndarray, observers: Sequence[PipelineObserver] = ()
) -> Iterator[FrameImage]:
    """Rendered frames of ``audio`` (16 kHz mono) in order, through the engine's threaded offline stages.

    ``observers`` see every motion row and every stage call. Leaving the loop early cancels the run.
    """
    num_frames = num_video_frames(len(audio), SAMPLE_RATE, FPS)
    stages = engine.offline_stages(source, num_frames, observers)
    runner = PipelineRunner(stages, queue_size=4, observers=observers)
    yield from runner.iterate([audio])


def run_clip(
    engine: Engine,
    source: str | Path,
    audio: str | Path,
    output: str | Path | None,
    *,
    stream: StreamingSession | None = None,
    samples: np.ndarray | None = None,
    realtime: bool | None = None,
    chunk_ms: float = 20.0,
    overwrite: bool | None = None,
    progress: bool | None = None,
    observers: Sequence[PipelineObserver] = (),
    on_frame: Callable[[FrameImage], None] | None = None,
) -> ClipReport:
    """Run one clip on ``engine`` and write the MP4 (H.264 + the speech as AAC) to ``output``.

    Args:
        source: portrait image or video; audio: the speech file (muxed into the video as it is).
        output: the MP4 (None: render without writing, e.g. to watch frames through ``on_frame``).
        stream: render online, feeding the audio through this streaming session as a live source would
            (None: offline, the whole clip at once).
        samples: ``audio`` already decoded (16 kHz mono float32), so it is not decoded twice.
        realtime: online only: feed ``chunk_ms`` pieces at 1x wall-clock speed (default ``mode.realtime``),
            otherwise as fast as the pipeline takes them.
        overwrite, progress: default ``cfg.overwrite`` (an infer config's; False for other apps') /
            ``cfg.progress``.
        observers: see every registered source frame, motion row and stage call.
        on_frame: called with each frame after it was written, in the caller's thread.
    """
    cfg = engine.cfg
    t0 = time.perf_counter()
    if samples is None:
        samples = load_audio(audio, SAMPLE_RATE)
    num_frames = num_video_frames(samples.shape[0], SAMPLE_RATE, FPS)
    engine.check_speech_features(num_frames, str(audio))
    t_reg = time.perf_counter()
    registered = engine.register(source, observers)
    register_s = time.perf_counter() - t_reg
    timer = StageTimer()
    emit: list[float] = []
    start = time.perf_counter()

    def written(frame: FrameImage) -> None:
        emit.append(time.perf_counter() - start)
        if on_frame is not None:
            on_frame(frame)

    write = {
        "num_frames": num_frames,
        "overwrite": (isinstance(cfg, InferConfig) and cfg.overwrite) if overwrite is None else overwrite,
        "progress": cfg.progress if progress is None else progress,
        "on_frame": written,
    }
    if stream is None:
        try:
            path, frames = write_frames(
                offline_frames(engine, registered, samples, [timer, *observers]), output, audio, **write
            )
        finally:
            registered.media.close()
        stage_ms, calls = timer.ms_per_frame(frames), timer.call_seconds()
    else:
        realtime = cfg.mode.realtime if realtime is None else realtime
        path, frames = _fed_stream(
            stream, registered, samples, output, audio, realtime, chunk_ms, observers, write
        )
        stage_ms, calls = stream.stage_ms_per_frame(), stream.stage_call_seconds()
    render_s = time.perf_counter() - start
    online = stream is not None
    return ClipReport(
        output=path,
        frames=frames,
        audio_s=samples.shape[0] / SAMPLE_RATE,
        seconds=time.perf_counter() - t0,
        register_s=register_s,
        render_s=render_s,
        load_s=engine.networks.load_s,
        mode="online" if online else "offline",
        realtime=bool(online and realtime),
        stage_ms_per_frame=stage_ms,
        stage_calls_s={name: times.tolist() for name, times in calls.items()},
        emit_s=emit,
        latency=stream.latency if online else None,
        latency_s=stream.frame_latencies().tolist() if online else [],
        peak_rss_mb=peak_rss_mb(),
    )


def _fed_stream(
    stream: StreamingSession,
    registered: RegisteredSource,
    samples: np.ndarray,
    output: str | Path | None,
    audio: str | Path,
    realtime: bool,
    chunk_ms: float,
    observers: Sequence[PipelineObserver],
    write: dict,
) -> tuple[Path | None, int]:
    """Start a stream on ``registered`` (which it closes at its end), feed ``samples`` from a thread as a
    live source would, and write what comes out."""
    num_frames = write["num_frames"]
    try:
        stream.start(registered, num_frames=num_frames, observers=observers, close_source=True)
    except BaseException:
        registered.media.close()
        raise
    feeder = threading.Thread(
        target=stream.feed, args=(samples, realtime, chunk_ms), name="stream-feeder", daemon=True
    )
    try:
        feeder.start()
        return write_frames(stream.frames(), output, audio, **write)
    except BaseException:
        stream.cancel()
        raise
    finally:
        feeder.join()
