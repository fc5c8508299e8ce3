"""One client's live stream on the shared engine, transport-agnostic (the WebSocket and WebRTC transports
use it).

    session = LiveSession(engine, portrait, settings, outbox)
    session.start()
    session.push_pcm16(chunk_bytes)      # any pace: a live microphone, or a file as fast as it can be sent
    session.end()                        # end of audio: the tail is rendered, then EndOfFrames
    frame = await outbox.get()           # LiveFrame: index, timestamp_s, (H, W, 3) uint8 RGB

Live behaviour:

- A pacer thread keeps the stream fed at the audio rate: every 20 ms it pushes what the client sent, and once
  the client is more than ``idle_fill_delay_s`` behind the wall clock it pushes silence up to that point, so
  the avatar keeps idling (Ditto's advice for idle) and the video never freezes. A client that sends faster
  than real time is never padded.
- A live session (``idle=True``) stays live when rendering is slower than real time: the stream is fed only
  a little ahead of its frames (what its windows need), the rest waits in a backlog, and audio that has
  waited so long that its frame would come out more than ``max_lag_s`` after it arrived is skipped (counted
  as ``skipped_s``). A file client (``idle=False``) is never skipped: every sample is rendered.
- Frames go into a bounded :class:`FrameOutbox`; when the client does not keep up the oldest waiting frame is
  dropped and counted, so a slow consumer never grows the server's memory.
- The session ends on :meth:`end` (after the tail), :meth:`cancel`, ``idle_timeout_s`` without client audio,
  ``max_session_s``, or a stage failure; its threads are joined and ``on_end`` is told why.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ditto_research.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ditto_research.errors import InputError
from ditto_research.pipeline.engine import Engine
from ditto_research.pipeline.latency import LatencyTracker
from ditto_research.pipeline.online import StreamingSession
from ditto_research.pipeline.registration import RegisteredSource
from ditto_research.pipeline.stages import FrameImage
from ditto_research.serve.config import ServeSettings

__all__ = ["EndOfFrames", "FrameOutbox", "LiveFrame", "LiveSession", "pcm16_to_float"]

TICK_S = 0.02  # pacer period: 320 samples
FEED_MARGIN_S = 0.12  # fed beyond the stream's own look-ahead, so a tick's jitter never starves it
STALL_S = 1.0  # no frame for this long after a feed while audio waits: feed more (never deadlock)


@dataclass(frozen=True)
class _Piece:
    """Audio waiting to be fed: (n,) float32 samples and when they reached the server (perf_counter)."""

    samples: np.ndarray
    arrived: float


@dataclass(frozen=True)
class LiveFrame:
    """A rendered frame: output index, its time on the stream's audio clock, (H, W, 3) uint8 RGB."""

    index: int
    timestamp_s: float
    image: np.ndarray


@dataclass(frozen=True)
class EndOfFrames:
    """The last item of an outbox: ``reason`` is "end" (all audio rendered), "cancel", "idle", "max_length",
    "error" (``error`` set) or "shutdown"."""

    reason: str
    error: BaseException | None = None


class FrameOutbox:
    """Bounded hand-over from the delivery thread to an asyncio consumer; drops the oldest frame when full.

    ``put`` may be called from any thread; ``get`` is awaited on the loop given at construction.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.size = size
        self.dropped = 0
        self._items: collections.deque[LiveFrame | EndOfFrames] = collections.deque()
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, item: LiveFrame | EndOfFrames) -> None:
        with self._lock:
            if self._closed:
                return
            if isinstance(item, EndOfFrames):
                self._closed = True
            else:
                while sum(isinstance(i, LiveFrame) for i in self._items) >= self.size:
                    self._items.popleft()
                    self.dropped += 1
            self._items.append(item)
        try:
            self.loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    async def get(self) -> LiveFrame | EndOfFrames:
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                self._ready.clear()
            await self._ready.wait()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit mono PCM -> (n,) float32 in [-1, 1).

    Raises:
        InputError: an odd number of bytes (not whole 16-bit samples).
    """
    if len(data) % 2:
        raise InputError(
            f"binary audio must be whole 16-bit samples (PCM16 little-endian), got {len(data)} bytes"
        )
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


class LiveSession:
    """A :class:`StreamingSession` fed at the audio rate, with bounded output and the session limits.

    Args:
        engine: the server's engine (or one derived from it with the client's options).
        portrait: a registered source (the server's cache; not closed by the session).
        settings: the server's limits and idle behaviour.
        outbox: where frames go (and the final :class:`EndOfFrames`).
        on_end: called once, on a worker thread, with the :class:`EndOfFrames` after every thread has ended.
        keep_audio_s: how much of the fed audio to keep for :meth:`audio_for_frame` (a transport that sends
            the speech back aligned with the frames).
    """

    def __init__(
        self,
        engine: Engine,
        portrait: RegisteredSource,
        settings: ServeSettings,
        outbox: FrameOutbox,
        on_end: Callable[[EndOfFrames], None] | None = None,
        keep_audio_s: float = 10.0,
        idle: bool = True,
    ) -> None:
        self.settings = settings
        self.idle = idle
        self.outbox = outbox
        self.on_end = on_end
        self.stream = StreamingSession(engine, queue_size=4)
        self.portrait = portrait
        self._lock = threading.Lock()
        self._pending: collections.deque[_Piece] = collections.deque()  # from the client, not yet paced
        self._backlog: collections.deque[_Piece] = collections.deque()  # paced, not yet fed (pacer only)
        self._backlog_samples = 0
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._reason: EndOfFrames | None = None
        self._pacer: threading.Thread | None = None
        self._client_samples = 0  # samples received from the client
        self._silence = 0  # samples of silence inserted
        self._skipped = 0  # samples skipped to keep a live session within max_lag_s
        self._fed = 0  # samples pushed into the stream (client audio + silence)
        self._lag = LatencyTracker()  # frame out - arrival of its audio at the server
        self._render_lag = LatencyTracker()  # frame out - feeding of its audio into the stream
        self._render_s = 0.0  # the stream's recent time from feeding to frame (smoothed)
        self._last_feed_at = 0.0
        self._feed_ahead = int(self._feed_ahead_s(engine) * SAMPLE_RATE)
        self._audio_ended = False
        self._started_at = 0.0
        self._last_audio_at = 0.0
        self._keep = int(keep_audio_s * SAMPLE_RATE)
        self._audio_ring = np.zeros(self._keep, np.float32)
        self.frames_out = 0
        self.first_frame_s: float | None = None
        self._frame_times: collections.deque[float] = collections.deque(maxlen=2 * FPS)

    @staticmethod
    def _feed_ahead_s(engine: Engine) -> float:
        """Audio the stream needs beyond its last rendered frame before it can make the next one (s): a
        window's stride and its cross-fade (the online LMDM emits a frame once the window after it has run)
        and a HuBERT chunk with its look-ahead, plus a margin for the pacer's tick."""
        cfg = engine.cfg
        stride = cfg.motion.seq_frames - cfg.motion.overlap_v2
        fuse = min(cfg.motion.overlap_v2, stride)
        _, new, right = cfg.mode.chunksize
        return (stride + fuse + new + right) / FPS + FEED_MARGIN_S

    @property
    def live(self) -> bool:
        """Skips audio to stay within ``max_lag_s`` (a live client with a limit set)."""
        return self.idle and self.settings.max_lag_s > 0

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the stage threads and the pacer (open-ended stream: the length is not known)."""
        now = time.perf_counter()
        self._started_at = self._last_audio_at = now
        self.stream.start(self.portrait, on_frame=self._on_frame)
        self._pacer = threading.Thread(target=self._pace, name="live-pacer", daemon=True)
        self._pacer.start()

    def push_pcm16(self, data: bytes) -> None:
        """Client audio as PCM16 bytes (16 kHz mono). InputError for a bad chunk or after :meth:`end`."""
        self.push(pcm16_to_float(data))

    def push(self, samples: np.ndarray) -> None:
        """Client audio, (n,) float32 in [-1, 1] at 16 kHz."""
        if self._audio_ended:
            raise InputError("audio after end: the session's audio has ended; start a new session")
        if not np.isfinite(samples).all():
            raise InputError("an audio chunk contains NaN or infinite samples")
        now = time.perf_counter()
        with self._lock:
            self._pending.append(_Piece(np.asarray(samples, np.float32), now))
            self._client_samples += samples.shape[0]
            self._last_audio_at = now

    def hold(self) -> None:
        """The transport is holding the client's audio back (back-pressure): the client is not idle, so the
        idle timeout starts again from now."""
        self._last_audio_at = time.perf_counter()

    def end(self) -> None:
        """End of the client's audio: what was sent is rendered, then the outbox ends with reason "end"."""
        self._audio_ended = True

    def cancel(self, reason: str = "cancel") -> None:
        """Stop now (frames in flight are dropped) and wait for every thread of the session."""
        self._finish(EndOfFrames(reason))
        self.join()

    def join(self, timeout_s: float = 10.0) -> None:
        """Wait until the session's threads have ended."""
        pacer = self._pacer
        if pacer is not None and pacer is not threading.current_thread():
            pacer.join(timeout_s)
        self._ended.wait(timeout_s)

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def audio_ahead_s(self) -> float:
        """Seconds of audio received (and not skipped) beyond the frames rendered so far (transports throttle
        on it)."""
        kept = self._client_samples + self._silence - self._skipped
        return kept / SAMPLE_RATE - self.frames_out / FPS

    # ---- numbers -----------------------------------------------------------------------------------------

    def stats(self) -> dict[str, float | int | None]:
        """First-frame latency, current lag behind the audio, p50 / p95 lag, fps, frames, dropped frames,
        audio skipped to stay live, and the pipeline's own time from feeding audio to its frame (the lag a
        live session cannot go below)."""
        report = self._lag.report()
        lags = self._lag.latencies()
        times = list(self._frame_times)
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

        def ms(value: float | None) -> float | None:
            return None if value is None else round(1000.0 * value, 1)

        return {
            "frames": self.frames_out,
            "first_frame_ms": ms(report.first_frame_s),
            "lag_ms": ms(float(lags[-1])) if lags.size else None,
            "lag_p50_ms": ms(report.p50_s),
            "lag_p95_ms": ms(report.p95_s),
            "fps": round(fps, 2),
            "dropped": self.outbox.dropped,
            "audio_s": round(self._fed / SAMPLE_RATE, 3),
            "skipped_s": round(self._skipped / SAMPLE_RATE, 3),
            "pipeline_ms": ms(self._render_s) if self.frames_out else None,
        }

    def audio_for_frame(self, index: int) -> np.ndarray:
        """The (640,) samples that drove frame ``index`` (zeros once they left the kept window)."""
        start = index * SAMPLES_PER_FRAME
        out = np.zeros(SAMPLES_PER_FRAME, np.float32)
        with self._lock:
            fed = self._fed
            if start >= fed or start < fed - self._keep:
                return out
            count = min(SAMPLES_PER_FRAME, fed - start)
            positions = (np.arange(start, start + count)) % self._keep
            out[:count] = self._audio_ring[positions]
        return out

    # ---- threads -----------------------------------------------------------------------------------------

    def _feed(self, piece: _Piece) -> None:
        samples = piece.samples
        now = time.perf_counter()
        with self._lock:
            positions = (np.arange(self._fed, self._fed + samples.shape[0])) % self._keep
            self._audio_ring[positions] = samples[-self._keep :] if samples.shape[0] > self._keep else samples
            self._fed += samples.shape[0]
            self._lag.audio_pushed(self._fed, piece.arrived)
            self._render_lag.audio_pushed(self._fed, now)
            self._last_feed_at = now
        self.stream.push(samples)

    def _pace_backlog(self) -> None:
        """Feed the backlog: all of it for a file client; for a live one only as far ahead of the frames as
        the stream needs, after skipping what has waited too long (its frame would be late by more than
        ``max_lag_s``: the wait so far plus the stream's own time from feeding to frame)."""
        if self.live:
            now = time.perf_counter()
            too_old = self.settings.max_lag_s - self._render_s
            while self._backlog and now - self._backlog[0].arrived > too_old:
                dropped = self._backlog.popleft()
                self._backlog_samples -= dropped.samples.shape[0]
                self._skipped += dropped.samples.shape[0]
        while self._backlog:
            ahead = self._fed - self.frames_out * SAMPLES_PER_FRAME
            if self.live and ahead >= self._feed_ahead and not self._stalled():
                return
            piece = self._backlog.popleft()
            self._backlog_samples -= piece.samples.shape[0]
            self._feed(piece)

    def _stalled(self) -> bool:
        """No frame since the last feed for :data:`STALL_S`: the stream may need more audio than estimated."""
        last = max(self._last_feed_at, self._frame_times[-1] if self._frame_times else 0.0)
        return time.perf_counter() - last > STALL_S

    def _pace(self) -> None:
        """Feed client audio as it comes and silence when it is late; enforce the session limits."""
        settings = self.settings
        try:
            while not self._stop.is_set():
                now = time.perf_counter()
                with self._lock:
                    pieces = list(self._pending)
                    self._pending.clear()
                for piece in pieces:
                    self._backlog.append(piece)
                    self._backlog_samples += piece.samples.shape[0]
                paced = self._client_samples + self._silence  # the stream's clock, skipped audio included
                behind = int((now - self._started_at - settings.idle_fill_delay_s) * SAMPLE_RATE) - paced
                if behind > 0 and self.idle and not self._audio_ended:
                    self._backlog.append(_Piece(np.zeros(behind, np.float32), now))
                    self._backlog_samples += behind
                    self._silence += behind
                self._pace_backlog()
                if self._audio_ended and not self._pending and not self._backlog:
                    self.stream.close()  # frames go on to the tail; _on_frame / the end watcher finish
                    self._wait_for_tail()
                    return
                if settings.idle_timeout_s and now - self._last_audio_at > settings.idle_timeout_s:
                    self._finish(EndOfFrames("idle"))
                    return
                if settings.max_session_s and now - self._started_at > settings.max_session_s:
                    self._finish(EndOfFrames("max_length"))
                    return
                if self.stream.error is not None:
                    self._finish(EndOfFrames("error", self.stream.error))
                    return
                self._stop.wait(TICK_S)
        except BaseException as e:  # noqa: BLE001 - the session's error, told to the transport
            self._finish(EndOfFrames("error", self.stream.error or e))

    def _wait_for_tail(self) -> None:
        while not self._stop.is_set():
            if self.stream.error is not None:
                self._finish(EndOfFrames("error", self.stream.error))
                return
            if not self._stream_running():
                self._finish(EndOfFrames("end"))
                return
            self._stop.wait(TICK_S)

    def _stream_running(self) -> bool:
        stream = self.stream._stream  # noqa: SLF001 - the delivery thread is the stream's liveness
        return stream is not None and stream.thread is not None and stream.thread.is_alive()

    def _on_frame(self, frame: FrameImage) -> None:  # the stream's delivery thread
        now = time.perf_counter()
        if self.first_frame_s is None:
            self.first_frame_s = now - self._started_at
        self.frames_out += 1
        self._frame_times.append(now)
        self._lag.frame_out(frame.index, now)
        render_s = self._render_lag.frame_out(frame.index, now)
        self._render_s = render_s if self.frames_out == 1 else 0.8 * self._render_s + 0.2 * render_s
        self.outbox.put(LiveFrame(frame.index, frame.index / FPS, frame.image))

    def _finish(self, reason: EndOfFrames) -> None:
        """First caller wins: stop the pacer, cancel the stream, tell the outbox and on_end (once)."""
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
        self._stop.set()
        threading.Thread(target=self._close, args=(reason,), name="live-close", daemon=True).start()

    def _close(self, reason: EndOfFrames) -> None:
        try:
            self.stream.cancel()  # after "end" the stream has finished: this only joins its delivery thread
        finally:
            self.outbox.put(reason)
            self._ended.set()
            release_free_memory()
            if self.on_end is not None:
                self.on_end(reason)


def release_free_memory() -> None:
    """Collect the ended session's cycles now and hand freed heap back to the OS (glibc), so the server's RSS
    returns after each session instead of creeping until the next full garbage collection."""
    gc.collect()  # a session leaves reference cycles (threads, frames, tracebacks) holding its buffers
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def limit_malloc_arenas(count: int = 4, mmap_threshold: int = 256 * 1024) -> None:
    """Keep a long-running server's heap from creeping: cap glibc's per-thread arenas (M_ARENA_MAX; every
    session starts threads) and fix the mmap threshold (M_MMAP_THRESHOLD) so frame-sized buffers are always
    mapped and unmapped, instead of glibc raising the threshold and fragmenting the arenas with them."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(-8, int(count))  # M_ARENA_MAX
        libc.mallopt(-3, int(mmap_threshold))  # M_MMAP_THRESHOLD (also turns off its dynamic adjustment)


def _libc():  # noqa: ANN202 - a ctypes handle
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(name)
        _ = libc.malloc_trim, libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
        return None
    return libc
