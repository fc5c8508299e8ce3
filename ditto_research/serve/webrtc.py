"""WebRTC transport (aiortc): the browser's microphone in, the talking head and its speech out.

    POST /api/offer   {"sdp", "type": "offer", "portrait": ID, "options": [OVERRIDE, ...]}
                      -> {"sdp", "type": "answer", "session": ID}
                      400 {"error": "bad_offer" | "no_portrait" | "bad_options"}, 422 "no_face", 503 "busy"

One peer connection carries one :class:`~ditto_research.serve.live.LiveSession`:

- the browser's audio track (Opus, 48 kHz) is resampled to 16 kHz mono and pushed into the session;
- a video track sends each rendered frame with ``pts = index * 3600`` on a 1/90000 clock (25 fps), so the RTP
  timestamps come from the frame index, never from the wall clock;
- an audio track sends the speech back, 20 ms at a time, from :meth:`LiveSession.audio_for_frame` for the
  frame the video has just sent: it never runs ahead of the video, skips forward when the video dropped
  frames, and sends silence before the first frame (see :class:`SpeechTrack`);
- the browser's data channel "stats" gets ``{"type": "stats", ...}`` every ``serve.stats_interval_s`` and
  ``{"type": "done", "reason", ...}`` or ``{"type": "error", "code", "message"}`` at the end; the browser may
  send ``{"type": "end"}`` (end of its audio: the tail is rendered, then "done") or ``{"type": "cancel"}``.

The session, the peer connection and the admission end together: when the connection fails or closes, when the
session ends (after a short grace for the last message), or at server shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InvalidAccessError, InvalidStateError
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack, VideoStreamTrack
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ditto_research.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ditto_research.errors import ConfigError, DittoError, InputError
from ditto_research.serve.live import EndOfFrames, FrameOutbox, LiveFrame, LiveSession
from ditto_research.serve.state import ServerState

log = logging.getLogger(__name__)

__all__ = ["FrameClock", "Peer", "SpeechTrack", "TalkingHeadTrack", "add_routes"]

VIDEO_CLOCK = 90000
TICKS_PER_FRAME = VIDEO_CLOCK // FPS  # 3600
CHUNK = SAMPLES_PER_FRAME // 2  # 20 ms of speech per audio packet: two per video frame
CHUNK_S = CHUNK / SAMPLE_RATE
MAX_AUDIO_BEHIND = 3  # frames the speech may trail the video before it skips forward
MAX_OFFER_BYTES = 256 * 1024  # an SDP offer is a few KB
END_GRACE_S = 1.0  # time for "done" to reach the browser before the connection is closed


class FrameClock:
    """The last frame index the video track handed to the encoder; the speech track follows it."""

    def __init__(self) -> None:
        self.sent: int | None = None
        self.ended = False
        self._changed = asyncio.Event()

    def mark(self, index: int) -> None:
        self.sent = index
        self._changed.set()

    def end(self) -> None:
        self.ended = True
        self._changed.set()

    async def wait_for(self, index: int) -> bool:
        """Wait until frame ``index`` has been sent (True) or the video has ended without it (False)."""
        while not self.ended and (self.sent is None or self.sent < index):
            self._changed.clear()
            await self._changed.wait()
        return self.sent is not None and self.sent >= index


class TalkingHeadTrack(VideoStreamTrack):
    """The session's frames, timestamped by index (25 fps on the 90 kHz RTP clock)."""

    def __init__(self, outbox: FrameOutbox, clock: FrameClock, on_end: Callable[[EndOfFrames], None]) -> None:
        super().__init__()
        self.outbox = outbox
        self.clock = clock
        self.on_end = on_end

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self.outbox.get()  # waits on an event: no polling
        if isinstance(item, EndOfFrames):
            self.clock.end()
            self.on_end(item)
            self.stop()
            raise MediaStreamError
        return self._video_frame(item)

    def _video_frame(self, item: LiveFrame) -> av.VideoFrame:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(item.image), format="rgb24")
        frame.pts = item.index * TICKS_PER_FRAME
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.clock.mark(item.index)
        return frame


class SpeechTrack(AudioStreamTrack):
    """The audio that drove each sent frame, 20 ms a packet at 16 kHz (the Opus encoder resamples to 48 kHz).

    Packet ``n`` leaves no earlier than ``n * 20 ms`` after the first (real-time pace) and, once frames flow,
    no earlier than the video frame it belongs to: chunk ``c`` is half ``c % 2`` of frame ``c // 2``. When the
    video is more than :data:`MAX_AUDIO_BEHIND` frames ahead (frames dropped for a slow client) the speech
    jumps to the frame just sent, so the two stay aligned. ``pts`` counts the samples sent.
    """

    def __init__(self, session: LiveSession, clock: FrameClock) -> None:
        super().__init__()
        self.session = session
        self.clock = clock
        self._sent = 0  # packets sent
        self._start: float | None = None
        self._chunk: int | None = None  # next chunk of the frame stream (None: before the first frame)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._sent * CHUNK_S - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        samples = np.zeros(CHUNK, np.float32)
        if self.clock.sent is not None:
            samples = await self._next_chunk()
        frame = av.AudioFrame.from_ndarray(
            (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)[None, :], format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._sent * CHUNK
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._sent += 1
        return frame

    async def _next_chunk(self) -> np.ndarray:
        sent = self.clock.sent
        assert sent is not None
        if self._chunk is None or sent - self._chunk // 2 > MAX_AUDIO_BEHIND:
            self._chunk = 2 * sent
        index, half = divmod(self._chunk, 2)
        if not await self.clock.wait_for(index):
            return np.zeros(CHUNK, np.float32)
        self._chunk += 1
        return self.session.audio_for_frame(index)[half * CHUNK : (half + 1) * CHUNK]


class Peer:
    """One browser: its peer connection, its session and the tasks between them."""

    def __init__(self, state: ServerState, sid: str, pc: RTCPeerConnection, peers: set[Peer]) -> None:
        self.state = state
        self.sid = sid
        self.pc = pc
        self.peers = peers
        self.session: LiveSession | None = None
        self.outbox: FrameOutbox | None = None
        self.channel: RTCDataChannel | None = None
        self.clock = FrameClock()
        self._tasks: set[asyncio.Future] = set()
        self._ending = False
        self._closed = asyncio.Event()
        self._closing = False

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future) -> None:
        """A task's failure ends this peer (the server goes on), with the traceback in the log."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("WebRTC session %s failed", self.sid, exc_info=task.exception())
            if not self._closing:
                self.spawn(self.close())

    # ---- wiring ------------------------------------------------------------------------------------------

    def attach(self, session: LiveSession, outbox: FrameOutbox) -> None:
        """The outgoing tracks and the stats ticker over a started session."""
        self.session, self.outbox = session, outbox
        self.pc.addTrack(TalkingHeadTrack(outbox, self.clock, self.ended))
        self.pc.addTrack(SpeechTrack(session, self.clock))
        self.spawn(self._tick())

    def on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self.spawn(self._read_microphone(track))

    def on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != "stats":
            return
        self.channel = channel
        channel.on("message", self._on_message)

    def on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.spawn(self.close())

    # ---- audio in ----------------------------------------------------------------------------------------

    async def _read_microphone(self, track: MediaStreamTrack) -> None:
        """Browser audio (any rate / layout) -> 16 kHz mono float32 into the session."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        audio_ended = False
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            session = self.session
            if session is None or session.ended or audio_ended:
                continue  # keep reading: an unread remote track queues frames without bound
            for out in resampler.resample(frame):
                samples = out.to_ndarray().reshape(-1).astype(np.float32) / 32768.0
                try:
                    session.push(samples)
                except InputError:  # after "end" the browser's track goes on, the session's audio does not
                    audio_ended = True
                    break

    def _on_message(self, message: object) -> None:
        session = self.session
        if session is None or not isinstance(message, str):
            return
        try:
            kind = json.loads(message).get("type")
        except (json.JSONDecodeError, AttributeError):
            self._send({"type": "error", "code": "bad_json", "message": "send JSON objects on the channel"})
            return
        if kind == "end":
            session.end()
        elif kind == "cancel":
            self.spawn(asyncio.get_running_loop().run_in_executor(None, session.cancel, "cancel"))

    # ---- stats and the end -------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(json.dumps(message))

    async def _tick(self) -> None:
        """Stats once per interval; also notices a session that ended before the video track started."""
        interval = self.state.cfg.serve.stats_interval_s
        session, outbox = self.session, self.outbox
        assert session is not None and outbox is not None
        while not self._ending:
            await asyncio.sleep(interval)
            if self._ending:
                return
            if not session.ended:
                self._send({"type": "stats", **session.stats()})
                continue
            # Ended, and the video track may never have started (no connection): take the end marker here. If
            # the track gets it first, its ended() closes the peer, which cancels this task.
            while not isinstance(item := await outbox.get(), EndOfFrames):
                pass
            self.ended(item)
            return

    def ended(self, item: EndOfFrames) -> None:
        """The session ended: tell the browser, then close after a grace period."""
        if self._ending:
            return
        self._ending = True
        self.clock.end()
        self.spawn(self._finish(item))

    async def _finish(self, item: EndOfFrames) -> None:
        session = self.session
        if session is not None:
            await asyncio.get_running_loop().run_in_executor(None, session.join)
        if item.reason == "error":
            message = f"the session failed: {item.error}"
            self._send({"type": "error", "code": "session_failed", "message": message})
        else:
            self._send({"type": "done", "reason": item.reason, **(session.stats() if session else {})})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closed.wait(), END_GRACE_S)
        await self.close()

    async def close(self) -> None:
        """End the session, close the connection, free the admission (idempotent)."""
        if self._closing:
            return
        self._closing = True
        self._ending = True
        self.clock.end()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        session = self.session
        if session is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, session.cancel if not session.ended else session.join)
        await self.pc.close()
        self.state.release(self.sid)
        self.peers.discard(self)
        self._closed.set()


def _error(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status)


def _parse_offer(body: object) -> tuple[RTCSessionDescription, str, tuple[str, ...]]:
    """The offer, the portrait id and the options (ValueError with a sentence naming the field)."""
    if not isinstance(body, dict):
        raise ValueError('the body must be a JSON object {"sdp", "type", "portrait", "options"}')
    sdp, kind, portrait = body.get("sdp"), body.get("type"), body.get("portrait")
    if not isinstance(sdp, str) or kind != "offer":
        raise ValueError('"sdp" must be the browser\'s offer and "type" must be "offer"')
    if not isinstance(portrait, str) or not portrait:
        raise ValueError('"portrait" must be the id of a portrait (GET /api/portraits)')
    options = body.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError('"options" must be a list of overrides such as "control.emo=3"')
    return RTCSessionDescription(sdp=sdp, type="offer"), portrait, tuple(options)


async def _open(state: ServerState, peers: set[Peer], body: object) -> JSONResponse:
    try:
        offer, portrait, options = _parse_offer(body)
    except ValueError as e:
        return _error("bad_offer", str(e), 400)
    try:
        state.store.get(portrait)
    except InputError as e:
        return _error("no_portrait", str(e), 400)
    sid = state.admit()
    if sid is None:
        return _error("busy", state.busy_message(), 503)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates: no STUN query to Google
    peer = Peer(state, sid, pc, peers)
    peers.add(peer)
    pc.on("track", peer.on_track)
    pc.on("datachannel", peer.on_datachannel)
    pc.on("connectionstatechange", peer.on_connection_state)
    try:
        await pc.setRemoteDescription(offer)
    except (ValueError, InvalidAccessError, InvalidStateError) as e:
        await peer.close()
        return _error("bad_offer", f"the SDP offer was refused: {e}", 400)
    loop = asyncio.get_running_loop()
    outbox = FrameOutbox(loop, state.cfg.serve.frame_queue)
    try:
        session = await loop.run_in_executor(None, state.new_session, sid, portrait, options, outbox)
    except ConfigError as e:
        await peer.close()
        return _error("bad_options", str(e), 400)
    except InputError as e:
        await peer.close()
        return _error("no_face", str(e), 422)
    except DittoError as e:
        await peer.close()
        return _error("session_failed", f"the session could not start: {e}", 500)
    peer.attach(session, outbox)
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except (ValueError, InvalidAccessError, InvalidStateError) as e:  # e.g. no codec in common
        await peer.close()
        return _error("bad_offer", f"no answer to this offer: {e}", 400)
    return JSONResponse({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "session": sid})


def add_routes(app: FastAPI, state: ServerState) -> None:
    """``POST /api/offer``, and closing every peer connection at shutdown (before the sessions are closed)."""
    peers: set[Peer] = set()
    app.state.webrtc_peers = peers
    if not state.cfg.verbose:  # aioice logs every ICE check at INFO, which the server's root logger shows
        for name in ("aioice", "aiortc"):
            logging.getLogger(name).setLevel(logging.WARNING)

    @app.post("/api/offer")
    async def offer(request: Request) -> JSONResponse:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return _error("bad_offer", "send the offer as JSON (Content-Type: application/json)", 415)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_OFFER_BYTES:
                return _error("bad_offer", f"the offer is over {MAX_OFFER_BYTES // 1024} KB", 413)
        try:
            parsed = json.loads(bytes(body))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            return _error("bad_offer", 'the body must be JSON {"sdp", "type", "portrait", "options"}', 400)
        return await _open(state, peers, parsed)

    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        async with inner(app_) as value:
            try:
                yield value
            finally:
                await asyncio.gather(*(peer.close() for peer in list(peers)), return_exceptions=True)

    app.router.lifespan_context = lifespan
