"""Online (streaming) generation: audio chunks in as they arrive, rendered frames out as soon as each is
ready.

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

Stages (one thread each on :class:`~ditto_research.pipeline.runner.PipelineRunner`, bounded queues, assembled
by the :class:`~ditto_research.pipeline.engine.Engine`)::

    push() ─► features (HuBERT chunks) ─► motion (online LMDM windows, d0) ─► stitch ─► warp ─► decode
          ─► paste ─► delivery thread (frames() iterator or on_frame callback, latency bookkeeping)

The motion semantics are those of the reference online pipeline (see :mod:`ditto_research.motion.online`);
the motion does not depend on how the audio was cut into chunks. Latency of a frame = the time it is handed
to the consumer minus the time its 40 ms of audio had been pushed (see
:class:`~ditto_research.pipeline.latency.LatencyTracker`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from ditto_research.config import PipelineConfig, compose
from ditto_research.constants import SAMPLE_RATE
from ditto_research.errors import DittoError, InputError, StageError
from ditto_research.pipeline.clip import ClipReport, run_clip
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.latency import LatencyReport, LatencyTracker, as_mono_16k
from ditto_research.pipeline.observers import PipelineObserver, StageTimer
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.pipeline.runner import PipelineRunner
from ditto_research.pipeline.stages import AudioPiece, DriveReference, FrameImage, FrameMotion

__all__ = ["StreamResult", "StreamingSession"]

StreamResult = ClipReport  # the report of run_file, by its former name

POLL_S = 0.05
FrameCallback = Callable[[FrameImage | FrameMotion], None]


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


class _Stream:
    """State of one stream (start() .. end of frames)."""

    def __init__(
        self,
        runner: PipelineRunner,
        timer: StageTimer,
        source: RegisteredSource,
        owns_source: bool,
        on_frame: FrameCallback | None,
        outbox_size: int,
    ) -> None:
        self.runner = runner
        self.timer = timer
        self.source = source
        self.owns_source = owns_source
        self.on_frame = on_frame
        self.latency = LatencyTracker()
        self.inbox: queue.Queue = queue.Queue()  # unbounded: a live producer must never block on push()
        self.outbox: queue.Queue = queue.Queue(maxsize=outbox_size)
        self.cancelled = threading.Event()
        self.closed = False
        self.pushed = 0  # samples so far
        self.iterating = False
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None


class StreamingSession:
    """Streaming talking-head generation on an :class:`~ditto_research.pipeline.engine.Engine`: ``start`` a
    source, ``push`` audio, get frames, ``close``.

    One stream at a time; after a stream has ended (frames exhausted, or ``close()`` in callback mode) the
    session can ``start`` the next one with the same networks. Several sessions may share one engine (a
    server: one session per client).

    Args:
        cfg: the composed config (``mode.chunksize`` and ``mode.realtime`` are read from it), or the engine to
            share.
        render: False stops after the motion stage; the stream then yields :class:`FrameMotion` items.
        queue_size: capacity of each queue between stages, and of the ``frames()`` hand-over queue.
    """

    def __init__(
        self, cfg: PipelineConfig | DictConfig | Engine, render: bool = True, queue_size: int = 4
    ) -> None:
        self.engine = cfg if isinstance(cfg, Engine) else Engine(cfg)
        self.cfg: PipelineConfig = self.engine.cfg
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
        return self.engine.device

    def release(self) -> None:
        """Cancel a running stream and free the engine's face front-end (the networks stay with the
        engine)."""
        if self._stream is not None and not self._stream_finished():
            self.cancel()
        self.engine.close()

    def __enter__(self) -> StreamingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ---- stream lifecycle --------------------------------------------------------------------------------

    def start(
        self,
        source: str | Path | RegisteredSource,
        *,
        num_frames: int | None = None,
        on_frame: FrameCallback | None = None,
        observers: Sequence[PipelineObserver] = (),
        close_source: bool | None = None,
    ) -> None:
        """Register ``source`` (or reuse a registered one) and start the stage threads.

        Args:
            num_frames: the stream's length in frames when known (a file): the blink schedule and
                ``control.fade_out`` use it, as offline. None: an open-ended stream.
            on_frame: called on a worker thread with each frame; without it, iterate :meth:`frames`.
            observers: see every generated motion row and every stage call
                (:class:`~ditto_research.pipeline.observers.PipelineObserver`).
            close_source: close the source's media when the stream ends (default: when ``start`` registered
                it; a registered source passed in stays open for the next stream unless this is True).
        """
        with self._lock:
            if self._stream is not None and not self._stream_finished():
                raise RuntimeError("a stream is already running; close() it and consume its frames first")
            registers = not isinstance(source, RegisteredSource)
            owns = registers if close_source is None else close_source
            registered = self.engine.register(source, observers) if registers else source
            timer = StageTimer()
            try:
                stages = self.engine.stream_stages(registered, num_frames, observers, render=self.render)
            except BaseException:
                if registers:
                    registered.media.close()
                raise
            runner = PipelineRunner(
                stages, queue_size=self.queue_size, poll_s=POLL_S, observers=[timer, *observers]
            )
            stream = _Stream(runner, timer, registered, owns, on_frame, self.queue_size)
            stream.thread = threading.Thread(
                target=self._deliver, args=(stream,), name="stream-delivery", daemon=True
            )
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
        return self._stream.timer.ms_per_frame(self._stream.latency.frames)

    def stage_call_seconds(self) -> dict[str, np.ndarray]:
        """Each stage's busy time per call (s), for the last 10 000 calls of the current (or last) stream."""
        return {} if self._stream is None else self._stream.timer.call_seconds()

    # ---- files ---------------------------------------------------------------------------------------------

    def run_file(
        self,
        source: str | Path,
        audio: str | Path,
        output: str | Path | None,
        *,
        realtime: bool | None = None,
        overwrite: bool | None = None,
        chunk_ms: float = 20.0,
        observers: Sequence[PipelineObserver] = (),
        on_frame: Callable[[FrameImage], None] | None = None,
    ) -> ClipReport:
        """Stream ``audio`` as if it arrived live and write the MP4 (frame count, size and sound as offline).

        Args:
            output: the MP4 (None: stream without writing, e.g. to watch frames through ``on_frame``).
            realtime: push ``chunk_ms`` pieces at 1x wall-clock speed (default ``mode.realtime``); otherwise
                as fast as the pipeline takes them. Latency numbers are meaningful in real time only.
            overwrite: replace an existing ``output`` (default ``cfg.overwrite``).
            observers: as for :meth:`start`; ``on_frame``: called with each frame in the caller's thread.

        Returns:
            The :class:`~ditto_research.pipeline.clip.ClipReport` of
            :func:`~ditto_research.pipeline.clip.run_clip` (the one run path of every clip; it defines the
            numbers).
        """
        return run_clip(
            self.engine,
            source,
            audio,
            output,
            stream=self,
            realtime=realtime,
            chunk_ms=chunk_ms,
            overwrite=overwrite,
            observers=observers,
            on_frame=on_frame,
        )

    def feed(self, samples: np.ndarray, realtime: bool, chunk_ms: float = 20.0) -> None:
        """Push a whole clip as a live source would, then close (run it on a feeder thread): ``chunk_ms``
        pieces at 1x wall-clock speed when ``realtime``, else 1 s pieces as fast as the pipeline takes them.

        A stream that failed or was cancelled ends the feed quietly (the consumer sees the error); a chunk the
        stream refuses (e.g. NaN samples), or anything else that goes wrong on the feeder thread (a bug keeps
        its traceback), becomes the stream's error, so the consumer never waits forever.
        """
        step = max(1, int(SAMPLE_RATE * chunk_ms / 1000)) if realtime else SAMPLE_RATE
        start = time.perf_counter()
        stream = self._stream
        try:
            for first in range(0, samples.shape[0], step):
                piece = samples[first : first + step]
                if realtime:  # a piece is complete once its last sample has been "recorded"
                    delay = start + (first + piece.shape[0]) / SAMPLE_RATE - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                self.push(piece)
            self.close()
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, never lost with the thread
            if stream is not None and stream.error is None and not stream.cancelled.is_set():
                self._fail(stream, e)

    # ---- internals ---------------------------------------------------------------------------------------

    def _stream_finished(self) -> bool:
        stream = self._stream
        return stream is None or stream.thread is None or not stream.thread.is_alive()

    def _fail(self, stream: _Stream, error: BaseException) -> None:
        """End ``stream`` with ``error`` (raised to the consumer)."""
        stream.error = error
        stream.runner.cancel()
        stream.inbox.put(_CLOSE)

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
            try:
                frames.close()  # joins the stage threads
            except BaseException as e:  # noqa: BLE001 - e.g. a stage that failed while being cancelled
                if stream.error is None:
                    stream.error = e
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
