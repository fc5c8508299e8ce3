"""Online (streaming) generation: audio chunks in as they arrive, rendered frames out as soon as each is ready.

    from ditto_research.pipeline.online import StreamingSession
    session = StreamingSession.from_overrides(["model=tiny", "mode=online"])
    session.start("face.png")
    # producer thread: session.push(chunk) for each piece of 16 kHz mono audio (float32 or int16), then
    # session.close(); consumer thread:
    for frame in session.frames():          # FrameImage: index, timestamp_s, (H, W, 3) uint8 RGB
        show(frame.image)
    print(session.latency.summary())

or ``session.start("face.png", on_frame=show)`` (frames delivered on a worker thread; ``close()`` then waits
for the tail and re-raises a failure), or ``session.run_file(source, audio, output)`` for the CLI.

Stages (one thread each on :class:`~ditto_research.pipeline.runner.PipelineRunner`, bounded queues)::

    push() ─► features (HuBERT chunks) ─► motion (online LMDM windows, d0) ─► stitch ─► warp ─► decode
          ─► paste ─► delivery thread (frames() iterator or on_frame callback, latency bookkeeping)

The motion semantics are those of the reference online pipeline (see :mod:`ditto_research.motion.online`);
the motion does not depend on how the audio was cut into chunks. Latency of a frame = the time it is handed
to the consumer minus the time its 40 ms of audio had been pushed (see :class:`LatencyTracker`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from ditto_research.audio.features import offline_features
from ditto_research.audio.io import load_audio, num_video_frames
from ditto_research.config import InferConfig, compose, to_config
from ditto_research.constants import FPS, SAMPLE_RATE
from ditto_research.errors import DittoError, InputError, StageError
from ditto_research.motion.format import source_motion_vector
from ditto_research.motion.online import (
    REFERENCE_PREFIX_CHUNKSIZE,
    AudioPiece,
    DriveReference,
    FeatureStage,
    MotionCallback,
    OnlineMotionGenerator,
    OnlineMotionStage,
)
from ditto_research.pipeline.controls import build_frame_controls, build_stitcher
from ditto_research.pipeline.networks import build_window_sampler
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.pipeline.runner import BaseStage, PipelineRunner
from ditto_research.pipeline.session import TalkingHeadSession, peak_rss_mb
from ditto_research.pipeline.stages import (
    DecodeStage,
    FrameImage,
    FrameKeypoints,
    FrameMotion,
    PasteStage,
    StitchStage,
    WarpStage,
)
from ditto_research.render.writer import VideoWriter

log = logging.getLogger(__name__)

POLL_S = 0.05
FrameCallback = Callable[[FrameImage | FrameMotion], None]

# ---- items ------------------------------------------------------------------------------------------------


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_CLOSE = _Marker("CLOSE")  # end of audio, in the push queue
_DONE = _Marker("DONE")  # end of frames, in the frames() queue


@dataclass(frozen=True)
class _Failed:
    error: BaseException


# ---- stages -----------------------------------------------------------------------------------------------


class OnlineStitchStage(StitchStage):
    """:class:`StitchStage` that takes d0 from the stream (the reference sets ``motion_stitch.d0``)."""

    def process(self, item: FrameMotion | DriveReference) -> Iterable[FrameKeypoints]:  # type: ignore[override]
        if isinstance(item, DriveReference):
            self.stitcher.set_d0(item.x_d_info)
            return ()
        return super().process(item)


class RingBuffer:
    """The last ``size`` floats of an endless series plus its running total, in memory allocated (and touched)
    up front, so that the books of a long stream never grow the resident set."""

    def __init__(self, size: int) -> None:
        self._values = np.full(size, np.nan)  # full(): every page is touched now, not as the stream goes
        self._count = 0
        self.total = 0.0

    def append(self, value: float) -> None:
        self._values[self._count % self._values.shape[0]] = value
        self._count += 1
        self.total += value

    def __len__(self) -> int:
        return min(self._count, self._values.shape[0])

    def values(self) -> np.ndarray:
        """The kept values (oldest first)."""
        size = self._values.shape[0]
        if self._count <= size:
            return self._values[: self._count].copy()
        start = self._count % size
        return np.concatenate([self._values[start:], self._values[:start]])

    def __iter__(self) -> Iterator[float]:
        return iter(self.values().tolist())


class _StreamRunner(PipelineRunner):
    """The runner with bounded per-stage timing, and whether it is stopping (for the push queue's reader)."""

    def __init__(self, stages: list[BaseStage], queue_size: int) -> None:
        super().__init__(stages, queue_size=queue_size, poll_s=POLL_S)
        for stats in self.stats.values():
            stats.process_s = RingBuffer(10_000)  # type: ignore[assignment]

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()


# ---- audio input ------------------------------------------------------------------------------------------


def as_mono_16k(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Validate one pushed chunk and return (n,) float32 (int16 is scaled by 1/32768; (n, 1) is accepted).

    Raises:
        InputError: wrong sample rate, dtype, shape, or non-finite values.
    """
    if sample_rate != SAMPLE_RATE:
        raise InputError(f"audio chunks must be {SAMPLE_RATE} Hz, got sample_rate={sample_rate}; resample first")
    if not isinstance(samples, np.ndarray):
        raise InputError(f"an audio chunk must be a numpy array of samples, got {type(samples).__name__}")
    if samples.ndim == 2 and samples.shape[1] == 1:
        samples = samples[:, 0]
    if samples.ndim != 1:
        hint = "; mix the channels down to mono" if samples.ndim == 2 else ""
        raise InputError(f"an audio chunk must be mono samples of shape (n,) or (n, 1), got shape {samples.shape}{hint}")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype not in (np.float32, np.float64):
        raise InputError(f"audio chunks must be float32 in [-1, 1] or int16, got dtype {samples.dtype}")
    out = np.array(samples, dtype=np.float32)  # a copy: the caller may reuse its buffer
    if not np.isfinite(out).all():
        raise InputError("an audio chunk contains NaN or infinite samples")
    return out


# ---- results ----------------------------------------------------------------------------------------------


@dataclass
class StreamResult:
    """What one streamed file did (the CLI summary and the benchmark numbers)."""

    output: Path | None
    frames: int
    seconds: float
    audio_s: float
    realtime: bool
    latency: LatencyReport
    stage_ms_per_frame: dict[str, float] = field(default_factory=dict)
    register_s: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def real_time_factor(self) -> float:
        """Processing time / audio time (< 1: faster than real time)."""
        return self.seconds / self.audio_s if self.audio_s > 0 else 0.0

    def summary(self) -> str:
        where = f" -> {self.output}" if self.output else ""
        head = f"{self.frames} frames in {self.seconds:.1f} s (RTF {self.real_time_factor:.2f})"
        if not self.realtime:  # fed as fast as possible: latencies would measure the queue, not the stream
            return f"{head}; latency is measured with mode.realtime=true{where}"
        return f"{head}; {self.latency.summary()}{where}"


class _Stream:
    """State of one stream (start() .. end of frames)."""

    def __init__(self, runner: _StreamRunner, source: RegisteredSource, owns_source: bool,
                 on_frame: FrameCallback | None, latency: LatencyTracker, outbox_size: int) -> None:
        self.runner = runner
        self.source = source
        self.owns_source = owns_source
        self.on_frame = on_frame
        self.latency = latency
        self.inbox: queue.Queue = queue.Queue()  # unbounded: a live producer must never block on push()
        self.outbox: queue.Queue = queue.Queue(maxsize=outbox_size)
        self.cancelled = threading.Event()
        self.closed = False
        self.pushed = 0  # samples so far
        self.iterating = False
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None


# ---- latency ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyReport:
    """Latency of one stream, in seconds (percentiles as ``np.percentile``, over the last frames kept).

    ``missed_deadlines``: frames handed over after ``t0 + index / 25``, t0 = when frame 0 was handed over,
    i.e. frames a player that starts showing at the first frame would have had to wait for.
    """

    frames: int
    first_frame_s: float | None
    p50_s: float | None
    p95_s: float | None
    max_s: float | None
    missed_deadlines: int

    def summary(self) -> str:
        if self.first_frame_s is None or self.p50_s is None:
            return "no frames"
        return (f"first frame {1000 * self.first_frame_s:.0f} ms, latency p50 {1000 * self.p50_s:.0f} / "
                f"p95 {1000 * (self.p95_s or 0):.0f} / max {1000 * (self.max_s or 0):.0f} ms, "
                f"{self.missed_deadlines} of {self.frames} frames missed their deadline")


class LatencyTracker:
    """Per-frame latency = hand-over time - time the frame's audio (640 samples) had been pushed. Thread-safe.

    The first frame's latency is reported as ``first_frame_s``. Memory is bounded: push times are dropped once
    their frames are out, and percentiles use the last ``keep`` latencies.
    """

    def __init__(self, keep: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._arrivals: deque[tuple[int, float]] = deque()  # (samples pushed so far, time)
        self._total: int | None = None  # samples in the whole stream, once closed
        self._latencies = RingBuffer(keep)
        self._frames = 0
        self._first_emit: float | None = None
        self._first_latency: float | None = None
        self._missed = 0
        self._max = 0.0

    def audio_pushed(self, samples_so_far: int, now: float) -> None:
        with self._lock:
            self._arrivals.append((samples_so_far, now))

    def audio_closed(self, total_samples: int, now: float) -> None:
        with self._lock:
            self._total = total_samples
            self._arrivals.append((total_samples, now))

    def frame_out(self, index: int, now: float) -> float:
        """Record frame ``index`` handed over at ``now``; returns its latency (s)."""
        with self._lock:
            needed = (index + 1) * SAMPLE_RATE // FPS
            if self._total is not None:
                needed = min(needed, self._total)
            while len(self._arrivals) > 1 and self._arrivals[0][0] < needed:
                self._arrivals.popleft()
            arrived = self._arrivals[0][1] if self._arrivals else now
            latency = max(now - arrived, 0.0)
            if self._first_emit is None:
                self._first_emit, self._first_latency = now, latency
            elif now > self._first_emit + index / FPS:
                self._missed += 1
            self._frames += 1
            self._max = max(self._max, latency)
            self._latencies.append(latency)
            return latency

    @property
    def frames(self) -> int:
        """Frames recorded so far."""
        return self._frames

    def latencies(self) -> np.ndarray:
        """Per-frame latencies (s) in frame order, the last ``keep`` of them."""
        with self._lock:
            return self._latencies.values()

    def report(self) -> LatencyReport:
        with self._lock:
            if not self._latencies:
                return LatencyReport(self._frames, None, None, None, None, self._missed)
            p50, p95 = np.percentile(self._latencies.values(), [50, 95])
            return LatencyReport(self._frames, self._first_latency, float(p50), float(p95), self._max, self._missed)


# ---- the session ------------------------------------------------------------------------------------------


class StreamingSession:
    """Streaming talking-head generation: ``start`` a source, ``push`` audio, get frames, ``close``.

    One stream at a time; after a stream has ended (frames exhausted, or ``close()`` in callback mode) the
    session can ``start`` the next one with the same networks.

    Args:
        cfg: the composed config (``mode`` may be online or offline; ``mode.chunksize`` and ``mode.realtime``
            are read from it).
        components: a :class:`TalkingHeadSession` whose networks, encoder and face front-end to share, and
            whose ``motion`` / ``control`` settings build each stream's conditions and windows (default: built
            from ``cfg``; pass one made from the same config).
        render: False stops after the motion stage; the stream then yields :class:`FrameMotion` items.
        queue_size: capacity of each queue between stages, and of the ``frames()`` hand-over queue.
    """

    def __init__(self, cfg: InferConfig | DictConfig, components: TalkingHeadSession | None = None,
                 render: bool = True, queue_size: int = 4) -> None:
        self.cfg: InferConfig = cfg if isinstance(cfg, InferConfig) else to_config(cfg)
        if components is None:
            # The components do not depend on the mode; TalkingHeadSession only accepts mode=offline.
            components = TalkingHeadSession(replace(self.cfg, mode=replace(self.cfg.mode, name="offline")))
        self.components = components
        self.render = render
        self.queue_size = queue_size
        self._stream: _Stream | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_overrides(cls, overrides: list[str] | None = None, **kwargs: object) -> StreamingSession:
        """Compose ``conf/infer.yaml`` with overrides (``mode=online`` is implied)."""
        return cls(compose("infer", ["mode=online", *(overrides or [])]), **kwargs)  # type: ignore[arg-type]

    @property
    def device(self) -> torch.device:
        return self.components.device

    def release(self) -> None:
        """Cancel a running stream and free the face front-end (networks stay with ``components``)."""
        if self._stream is not None and not self._stream_finished():
            self.cancel()
        self.components.close()

    def __enter__(self) -> StreamingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ---- stream lifecycle --------------------------------------------------------------------------------

    def start(self, source: str | Path | RegisteredSource, *, num_frames: int | None = None,
              on_frame: FrameCallback | None = None, on_motion: MotionCallback | None = None) -> None:
        """Register ``source`` (or reuse a registered one) and start the stage threads.

        Args:
            num_frames: the stream's length in frames when known (a file): the blink schedule and
                ``control.fade_out`` use it, as offline. None: an open-ended stream.
            on_frame: called on a worker thread with each frame; without it, iterate :meth:`frames`.
            on_motion: called on the motion thread with (frame index, (265,) motion row).
        """
        with self._lock:
            if self._stream is not None and not self._stream_finished():
                raise RuntimeError("a stream is already running; close() it and consume its frames first")
            owns = not isinstance(source, RegisteredSource)
            registered = self.components.register(source) if owns else source
            try:
                stages = self._build_stages(registered, num_frames, on_motion)
            except BaseException:
                if owns:
                    registered.media.close()
                raise
            runner = _StreamRunner(stages, queue_size=self.queue_size)
            stream = _Stream(runner, registered, owns, on_frame, LatencyTracker(), self.queue_size)
            stream.thread = threading.Thread(target=self._deliver, args=(stream,), name="stream-delivery",
                                             daemon=True)
            self._stream = stream
            stream.thread.start()

    def push(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
        """Append audio: (n,) or (n, 1) float32 in [-1, 1] or int16, mono, 16 kHz; any n (0 is fine).

        Raises:
            InputError: a bad chunk, no stream started, or the stream was closed.
            DittoError: the stream failed (the stage's error).
        """
        stream = self._stream
        if stream is None:
            raise InputError("push() before start(): start a stream with session.start(source) first")
        if stream.closed:
            raise InputError("push() after close(): the stream's audio has ended; start() a new stream")
        if stream.error is not None:
            raise stream.error
        if stream.cancelled.is_set():
            raise InputError("push() after cancel(): start() a new stream")
        chunk = as_mono_16k(samples, sample_rate)
        if chunk.shape[0] == 0:
            return
        stream.pushed += chunk.shape[0]
        stream.latency.audio_pushed(stream.pushed, time.perf_counter())
        stream.inbox.put(AudioPiece(chunk))

    def close(self) -> None:
        """End of audio: the tail is flushed. With ``on_frame``, waits for the last frame and re-raises a
        failure; otherwise :meth:`frames` ends after the tail. Closing twice is a no-op."""
        stream = self._stream
        if stream is None or stream.closed:
            return
        stream.closed = True
        stream.latency.audio_closed(stream.pushed, time.perf_counter())
        stream.inbox.put(_CLOSE)
        if stream.on_frame is not None:
            self._join(stream)
            if stream.error is not None:
                raise stream.error

    def cancel(self) -> None:
        """Stop the stream now (frames in flight are dropped) and wait for its threads."""
        stream = self._stream
        if stream is None:
            return
        stream.cancelled.set()
        stream.runner.cancel()
        stream.inbox.put(_CLOSE)
        self._join(stream)

    def frames(self) -> Iterator[FrameImage | FrameMotion]:
        """Frames in order as they are ready; ends after ``close()`` and the tail, or raises the stage error.

        Leaving the loop early cancels the stream.
        """
        stream = self._stream
        if stream is None:
            raise InputError("frames() before start(): start a stream with session.start(source) first")
        if stream.on_frame is not None:
            raise InputError("this stream delivers frames to on_frame; frames() is for streams without it")
        if stream.iterating:
            raise RuntimeError("frames() is already being iterated for this stream")
        stream.iterating = True
        completed = False
        try:
            while True:
                try:
                    item = stream.outbox.get(timeout=POLL_S)
                except queue.Empty:
                    if stream.thread is not None and not stream.thread.is_alive() and stream.outbox.empty():
                        break  # cancelled from another thread
                    continue
                if item is _DONE:
                    completed = True
                    break
                if isinstance(item, _Failed):
                    completed = True
                    raise item.error
                yield item
        finally:
            if not completed:
                self.cancel()
            self._join(stream)

    @property
    def error(self) -> BaseException | None:
        """The failure of the current (or last) stream, once it has failed."""
        return None if self._stream is None else self._stream.error

    def frame_latencies(self) -> np.ndarray:
        """Per-frame latencies (s) of the current (or last) stream, in frame order (the last 100 000)."""
        return np.zeros(0) if self._stream is None else self._stream.latency.latencies()

    @property
    def latency(self) -> LatencyReport:
        """Latency of the current (or last) stream so far."""
        if self._stream is None:
            return LatencyTracker().report()
        return self._stream.latency.report()

    def stage_ms_per_frame(self) -> dict[str, float]:
        """Busy time of each stage divided by the frames handed over so far (ms)."""
        if self._stream is None:
            return {}
        frames = max(self._stream.latency.frames, 1)
        stats = self._stream.runner.stats
        return {name: 1000.0 * s.process_s.total / frames for name, s in stats.items()}  # type: ignore[attr-defined]

    def stage_call_seconds(self) -> dict[str, np.ndarray]:
        """Each stage's busy time per call (s), for the last 10 000 calls of the current (or last) stream."""
        if self._stream is None:
            return {}
        return {name: s.process_s.values() for name, s in self._stream.runner.stats.items()}  # type: ignore[attr-defined]

    # ---- files ---------------------------------------------------------------------------------------------

    def run_file(self, source: str | Path, audio: str | Path, output: str | Path, *, realtime: bool | None = None,
                 overwrite: bool | None = None, chunk_ms: float = 20.0) -> StreamResult:
        """Stream ``audio`` as if it arrived live and write the MP4 (frame count, size and sound as offline).

        Args:
            realtime: push ``chunk_ms`` pieces at 1x wall-clock speed (default ``mode.realtime``); otherwise as
                fast as the pipeline takes them. Latency numbers are meaningful in real time only.
            overwrite: replace an existing ``output`` (default ``cfg.overwrite``).
        """
        realtime = self.cfg.mode.realtime if realtime is None else realtime
        samples = load_audio(audio, SAMPLE_RATE)
        num_frames = num_video_frames(samples.shape[0], SAMPLE_RATE, FPS)
        t_reg = time.perf_counter()
        registered = self.components.register(source)
        register_s = time.perf_counter() - t_reg
        try:
            writer = VideoWriter(output, fps=FPS, overwrite=self.cfg.overwrite if overwrite is None else overwrite)
        except BaseException:
            registered.media.close()
            raise
        t0 = time.perf_counter()
        self.start(registered, num_frames=num_frames)
        stream = self._stream
        assert stream is not None
        stream.owns_source = True
        feeder = threading.Thread(target=self.feed, args=(samples, realtime, chunk_ms), name="stream-feeder",
                                  daemon=True)
        try:
            feeder.start()
            with tqdm(total=num_frames, desc="render", unit="frame", disable=not self.cfg.progress) as bar:
                for frame in self.frames():
                    writer.write(frame.image)  # type: ignore[union-attr]
                    bar.update()
            path = writer.close(audio)
        except BaseException:
            self.cancel()
            writer.abort()
            raise
        finally:
            feeder.join()
        return StreamResult(path, writer.frames_written, time.perf_counter() - t0, samples.shape[0] / SAMPLE_RATE,
                            realtime, self.latency, self.stage_ms_per_frame(), register_s, peak_rss_mb())

    def feed(self, samples: np.ndarray, realtime: bool, chunk_ms: float = 20.0) -> None:
        """Push a whole clip as a live source would, then close (run it on a feeder thread): ``chunk_ms`` pieces
        at 1x wall-clock speed when ``realtime``, else 1 s pieces as fast as the pipeline takes them. A failed
        or cancelled stream ends the feed quietly; the consumer sees the error."""
        step = max(1, int(SAMPLE_RATE * chunk_ms / 1000)) if realtime else SAMPLE_RATE
        start = time.perf_counter()
        try:
            for first in range(0, samples.shape[0], step):
                piece = samples[first : first + step]
                if realtime:  # a piece is complete once its last sample has been "recorded"
                    delay = start + (first + piece.shape[0]) / SAMPLE_RATE - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                self.push(piece)
            self.close()
        except DittoError:
            return  # the stream failed or was cancelled: frames() raises it in the consumer

    # ---- internals ---------------------------------------------------------------------------------------

    def _stream_finished(self) -> bool:
        stream = self._stream
        return stream is None or stream.thread is None or not stream.thread.is_alive()

    def _build_stages(self, source: RegisteredSource, num_frames: int | None,
                      on_motion: MotionCallback | None) -> list[BaseStage]:
        cfg, nets = self.cfg, self.components.networks
        stages: list[BaseStage] = [
            FeatureStage(self.components.encoder, tuple(cfg.mode.chunksize)),  # type: ignore[arg-type]
            OnlineMotionStage(self._motion_generator(source), on_motion),
        ]
        if not self.render:
            return stages
        length = -1 if num_frames is None else int(num_frames)
        if length < 0 and cfg.control.fade_out > 0:
            log.warning("control.fade_out needs the stream length; it is off for an open-ended stream")
        threads = cfg.backend.num_threads
        stitcher = build_stitcher(cfg.control, nets.stitch_network, source, length)
        controls = build_frame_controls(cfg.control, max(length, 0))
        return stages + [
            OnlineStitchStage(stitcher, source, controls, self.device),
            WarpStage(nets.warp_network, source, threads),
            DecodeStage(nets.decoder, threads),
            PasteStage(source),
        ]

    def _motion_generator(self, source: RegisteredSource) -> OnlineMotionGenerator:
        """The online audio-to-motion state for one stream (fresh sampler noise from ``control.seed``)."""
        cfg, components = self.cfg, self.components
        settings = components.motion_settings(fuse_mode="online")
        sampler = build_window_sampler(components.networks.lmdm, cfg.sampler, cfg.control.seed, self.device)
        return OnlineMotionGenerator(sampler, components.condition_builder(source),
                                     source_motion_vector(source.frames[0].x_s_info), settings,
                                     self._silence_features(settings.overlap_v2), components.motion_value_range(),
                                     self.device)

    def _silence_features(self, num_frames: int) -> np.ndarray:
        """(O, D) features of O * 640 zero samples, with the reference's default chunksize (its wav2feat call)."""
        encoder = self.components.encoder
        silence = np.zeros(max(num_frames, 1) * SAMPLE_RATE // FPS, np.float32)
        feats = offline_features(silence, encoder, REFERENCE_PREFIX_CHUNKSIZE)
        return feats[:num_frames]

    def _audio_items(self, stream: _Stream) -> Iterator[AudioPiece]:
        """The runner's source: pushed pieces until close(); gives up when the run stops."""
        while True:
            try:
                item = stream.inbox.get(timeout=POLL_S)
            except queue.Empty:
                if stream.runner.stopping:
                    return
                continue
            if item is _CLOSE:
                return
            yield item

    def _deliver(self, stream: _Stream) -> None:
        """Delivery thread: drive the runner, time each frame, hand it to on_frame or the frames() queue."""
        frames = stream.runner.iterate(self._audio_items(stream))
        try:
            for item in frames:
                if isinstance(item, DriveReference):
                    continue
                stream.latency.frame_out(item.index, time.perf_counter())
                if stream.on_frame is not None:
                    try:
                        stream.on_frame(item)
                    except DittoError:
                        raise
                    except Exception as e:  # noqa: BLE001 - reported as the stream's error
                        raise StageError("on_frame", e) from e
                elif not self._offer(stream, item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            stream.error = e
            stream.runner.cancel()
        finally:
            frames.close()  # joins the stage threads
            if stream.owns_source:
                stream.source.media.close()
            if stream.on_frame is None:
                self._offer(stream, _Failed(stream.error) if stream.error is not None else _DONE)

    def _offer(self, stream: _Stream, item: object) -> bool:
        """Put into the frames() queue; False when the stream was cancelled meanwhile."""
        while not stream.cancelled.is_set():
            try:
                stream.outbox.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _join(self, stream: _Stream) -> None:
        thread = stream.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
