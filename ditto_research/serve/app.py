"""The ASGI app: the browser page, the portrait API, the WebSocket API and (with aiortc) WebRTC.

    GET  /                 the page (plain HTML + JS from serve/static, nothing from outside the server)
    GET  /api/health       {"ok": true, "sessions": n, "max_sessions": m}
    GET  /api/portraits    [{"id", "name", "width", "height"}, ...]
    POST /api/portraits    raw image bytes in the body -> {"id", ...}
                           (400 not an image, 413 too big, 422 no face)
    WS   /ws               the streaming protocol of :mod:`ditto_research.serve.protocol`
    POST /api/offer        WebRTC: {"sdp", "type", "portrait", "options"} -> the answer (see serve/webrtc.py)

One :class:`ServerState` holds the engine (networks loaded once), the portrait store and the admission count;
every session is a :class:`~ditto_research.serve.live.LiveSession` on that engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse
from starlette.websockets import WebSocketState

from ditto_research.constants import SAMPLE_RATE
from ditto_research.errors import ConfigError, DittoError, InputError
from ditto_research.serve import protocol
from ditto_research.serve.access import refusal, token_ok
from ditto_research.serve.live import EndOfFrames, FrameOutbox, LiveFrame, LiveSession, pcm16_to_float
from ditto_research.serve.state import ServerState

log = logging.getLogger(__name__)

__all__ = ["ServerState", "create_app", "refusal"]  # ServerState, refusal: re-exported

STATIC = Path(__file__).resolve().parent / "static"


def create_app(state: ServerState) -> FastAPI:
    """The app over ``state`` (its lifespan closes every session and the state at shutdown)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.get_running_loop().run_in_executor(None, state.close)

    app = FastAPI(title="ditto-research live server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = state
    if state.cfg.serve.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(state.cfg.serve.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )

    @app.middleware("http")
    async def require_token(request: Request, call_next):  # noqa: ANN202 - starlette's signature
        if not token_ok(state, request.headers.get("authorization"), request.query_params.get("token")):
            return JSONResponse(
                {"error": "unauthorized", "message": "missing or wrong token (serve.token)"}, 401
            )
        reason = refusal(
            state, request.headers, changes_state=request.method not in ("GET", "HEAD", "OPTIONS")
        )
        if reason is not None:
            return JSONResponse({"error": "forbidden", "message": reason}, 403)
        return await call_next(request)

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    shipped = {path.name for path in STATIC.iterdir() if path.is_file()}  # the page's own files, nothing else

    @app.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        if name not in shipped:  # never a path built from the request (.., long names, links)
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name)

    @app.get("/api/health")
    async def health() -> dict[str, object]:
        with state._lock:
            n = len(state.sessions)
        return {"ok": True, "sessions": n, "max_sessions": state.cfg.serve.max_sessions}

    @app.get("/api/portraits")
    async def portraits() -> list[dict[str, object]]:
        return state.store.list()

    @app.post("/api/portraits")
    async def upload(request: Request) -> JSONResponse:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not kind.startswith("image/"):
            # text/plain, forms and other types a page can send to any site without asking first are refused
            return JSONResponse(
                {
                    "error": "bad_content_type",
                    "message": f"Content-Type {kind[:60] or 'missing'!r}: send the image with its image/* "
                    "type (e.g. image/png)",
                },
                415,
            )
        limit = state.store.max_upload_bytes
        too_big = JSONResponse(
            {
                "error": "too_big",
                "message": f"the upload is over {limit / 2**20:.1f} MB (serve.max_upload_mb)",
            },
            413,
        )
        body, seen = bytearray(), 0
        async for chunk in request.stream():
            seen += len(chunk)
            if seen <= limit:
                body += chunk
            elif (
                seen > 8 * limit
            ):  # a moderate excess is read (and dropped): the client sees 413, not a reset
                return too_big
        if seen > limit:
            return too_big
        name = request.headers.get("x-filename", "upload")
        loop = asyncio.get_running_loop()
        try:
            portrait = await loop.run_in_executor(None, state.store.add_bytes, bytes(body), name)
        except InputError as e:
            return JSONResponse({"error": "bad_image", "message": str(e)}, 400)
        try:
            await loop.run_in_executor(None, state.store.registered, portrait.id)
        except InputError as e:
            state.store.remove(portrait.id)
            return JSONResponse({"error": "no_face", "message": str(e)}, 422)
        return JSONResponse(portrait.describe())

    @app.websocket("/ws")
    async def ws_endpoint(ws: WebSocket) -> None:
        await ws.accept()
        if not token_ok(state, ws.headers.get("authorization"), ws.query_params.get("token")):
            await ws.close(protocol.CLOSE_POLICY, "unauthorized: missing or wrong token (serve.token)")
            return
        reason = refusal(state, ws.headers, changes_state=True)
        if reason is not None:
            await ws.close(protocol.CLOSE_POLICY, reason.encode()[:120].decode(errors="ignore"))
            return
        sid = state.admit()
        if sid is None:
            await ws.close(protocol.CLOSE_BUSY, state.busy_message())
            return
        try:
            await _serve_ws(state, ws, sid)
        finally:
            state.release(sid)

    try:
        from ditto_research.serve import webrtc
    except ImportError as e:  # aiortc missing: the WebSocket API still works
        log.warning("WebRTC is off (%s): the page cannot stream; the WebSocket API still works", e)
    else:
        webrtc.add_routes(app, state)
    return app


async def _serve_ws(state: ServerState, ws: WebSocket, sid: str) -> None:
    """One WebSocket connection: protocol loop, frame sender and stats ticker.

    Audio that runs more than ``serve.max_audio_ahead_s`` ahead of the frames is held (:class:`_HeldAudio`)
    and fed as the frames catch up, while the socket is still read: a ``cancel``, ``ping`` or ``end`` behind
    that audio is seen at once. Only beyond ``serve.max_held_audio_s`` of held audio does the server stop
    reading the socket (TCP back-pressure), so a client's memory share stays bounded."""
    loop = asyncio.get_running_loop()
    settings = state.cfg.serve
    outbox = FrameOutbox(loop, settings.frame_queue)
    session: LiveSession | None = None
    tasks: list[asyncio.Task] = []
    held = _HeldAudio(settings.max_audio_ahead_s, settings.max_held_audio_s)
    receive: asyncio.Future | None = None
    try:
        while True:
            if session is not None:
                held.feed(session)
            if tasks and tasks[0].done():
                return
            if held.full:  # back-pressure: the client cannot send while we do not read
                await asyncio.sleep(0.05)
                continue
            if receive is None:
                receive = asyncio.ensure_future(ws.receive())
            if held:  # wake up to feed held audio as the frames catch up
                done, _ = await asyncio.wait({receive}, timeout=0.05)
                if not done:
                    continue
            message = await receive
            receive = None
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            try:
                if data is not None:
                    if session is None:
                        raise protocol.ProtocolError(
                            "no_session", "audio before start: send a start message first"
                        )
                    held.add(session, data)
                    continue
                control = protocol.parse_control(text or "")
                kind = control["type"]
                if kind == "ping":
                    await ws.send_text(json.dumps({"type": "pong"}))
                elif kind == "start":
                    if session is not None:
                        raise protocol.ProtocolError(
                            "already_started", "this connection already has a session"
                        )
                    start = protocol.parse_start(control)
                    session = await _start(state, sid, start, outbox)
                    first = state.store.get(start.portrait)
                    await ws.send_text(
                        json.dumps(
                            {
                                "type": "ready",
                                "session": sid,
                                "fps": 25,
                                "sample_rate": 16000,
                                "width": first.width,
                                "height": first.height,
                            }
                        )
                    )
                    tasks = [
                        asyncio.create_task(_send_frames(ws, outbox, session, settings.jpeg_quality)),
                        asyncio.create_task(_send_stats(ws, session, settings.stats_interval_s)),
                    ]
                elif session is None:
                    raise protocol.ProtocolError(
                        "no_session", f"{kind} before start: send a start message first"
                    )
                elif kind == "end":
                    held.end(session)  # after the held audio, which is the client's audio before "end"
                else:  # cancel: at once, the held audio with it
                    held.clear()
                    await loop.run_in_executor(None, session.cancel)
            except protocol.ProtocolError as e:
                await _fail(ws, e.code, e.message, protocol.CLOSE_PROTOCOL)
                return
    except WebSocketDisconnect:
        return
    except Exception:  # a bug of ours: logged with its traceback; this connection ends, the server goes on
        log.exception("WebSocket session %s failed", sid)
        await _fail(ws, "server_error", "the server failed on this message (logged)", protocol.CLOSE_INTERNAL)
        return
    finally:
        if receive is not None:
            receive.cancel()
        for task in tasks:
            task.cancel()
        if session is not None and not session.ended:
            await loop.run_in_executor(None, session.cancel, "disconnect")
        elif session is not None:
            await loop.run_in_executor(None, session.join)


class _HeldAudio:
    """A WebSocket client's audio beyond ``ahead_s`` of the rendered frames, in arrival order, at most
    ``limit_s`` of it (float32 samples: 64 KB per second); a requested ``end`` waits behind it."""

    def __init__(self, ahead_s: float, limit_s: float) -> None:
        self.ahead_s = ahead_s
        self.limit = int(limit_s * SAMPLE_RATE)
        self.chunks: collections.deque[np.ndarray] = collections.deque()
        self.samples = 0
        self.end_requested = False

    def __bool__(self) -> bool:
        return bool(self.chunks) or self.end_requested

    @property
    def full(self) -> bool:
        return self.samples >= self.limit

    def add(self, session: LiveSession, data: bytes) -> None:
        """Checked PCM16 ``data``: pushed now when nothing is held and the frames are close enough, else
        held (ProtocolError ``bad_audio`` for a bad chunk or audio after ``end``, as the session says it)."""
        try:
            samples = pcm16_to_float(data)
            if self.end_requested:
                raise InputError("audio after end: the session's audio has ended; start a new session")
            if not self.chunks and session.audio_ahead_s() <= self.ahead_s:
                session.push(samples)
                return
        except InputError as e:
            raise protocol.ProtocolError("bad_audio", str(e)) from e
        self.chunks.append(samples)
        self.samples += samples.shape[0]

    def feed(self, session: LiveSession) -> None:
        """Push held audio while the frames are close enough, then a requested end; drop it all once the
        session has ended."""
        if session.ended:
            self.clear()
            return
        while self.chunks and session.audio_ahead_s() <= self.ahead_s:
            chunk = self.chunks.popleft()
            self.samples -= chunk.shape[0]
            session.push(chunk)
        if self.chunks:
            session.hold()  # the client is not idle: its audio is waiting here
        elif self.end_requested:
            self.end_requested = False
            session.end()

    def end(self, session: LiveSession) -> None:
        self.end_requested = True
        self.feed(session)

    def clear(self) -> None:
        self.chunks.clear()
        self.samples = 0
        self.end_requested = False


async def _start(
    state: ServerState, sid: str, start: protocol.StartMessage, outbox: FrameOutbox
) -> LiveSession:
    loop = asyncio.get_running_loop()
    try:
        state.store.get(start.portrait)
    except InputError as e:
        raise protocol.ProtocolError("no_portrait", str(e)) from e
    try:
        return await loop.run_in_executor(
            None, state.new_session, sid, start.portrait, start.options, outbox, start.idle
        )
    except ConfigError as e:
        raise protocol.ProtocolError("bad_options", str(e)) from e
    except InputError as e:
        raise protocol.ProtocolError("no_face", str(e)) from e
    except Exception as e:  # a bug of ours: logged with its traceback; the client is told, the server goes on
        log.exception("session %s could not start", sid)
        raise protocol.ProtocolError(
            "session_failed", f"the session could not start ({type(e).__name__}; the server's log has it)"
        ) from e


async def _send_frames(ws: WebSocket, outbox: FrameOutbox, session: LiveSession, quality: int) -> None:
    """Frames as JPEG until the outbox ends, then "done" (or "error") and close."""
    loop = asyncio.get_running_loop()
    params = [int(cv2.IMWRITE_JPEG_QUALITY), quality]

    def encode(frame: LiveFrame) -> bytes:
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise DittoError(f"could not encode frame {frame.index} as JPEG")
        return protocol.encode_frame(frame.index, frame.timestamp_s, jpeg.tobytes())

    while True:
        item = await outbox.get()
        if isinstance(item, EndOfFrames):
            break
        payload = await loop.run_in_executor(None, encode, item)
        await ws.send_bytes(payload)
    await loop.run_in_executor(None, session.join)
    if ws.client_state != WebSocketState.CONNECTED:
        return
    if item.reason == "error":
        await _fail(ws, "session_failed", f"the session failed: {item.error}", protocol.CLOSE_INTERNAL)
        return
    await ws.send_text(json.dumps({"type": "done", "reason": item.reason, **session.stats()}))
    await ws.close(protocol.CLOSE_NORMAL)


async def _send_stats(ws: WebSocket, session: LiveSession, interval_s: float) -> None:
    while not session.ended:
        await asyncio.sleep(interval_s)
        if ws.client_state == WebSocketState.CONNECTED and not session.ended:
            await ws.send_text(json.dumps({"type": "stats", **session.stats()}))


async def _fail(ws: WebSocket, code: str, message: str, close_code: int) -> None:
    if ws.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.send_text(protocol.error_message(code, message))
            await ws.close(
                close_code, message.encode()[:120].decode(errors="ignore")
            )  # a close reason: <= 123 bytes
