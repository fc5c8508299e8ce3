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
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse
from starlette.websockets import WebSocketState

from ditto_research.errors import ConfigError, DittoError, InputError
from ditto_research.serve import protocol
from ditto_research.serve.access import refusal, token_ok
from ditto_research.serve.live import EndOfFrames, FrameOutbox, LiveFrame, LiveSession
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
    """One WebSocket connection: protocol loop, frame sender and stats ticker."""
    loop = asyncio.get_running_loop()
    settings = state.cfg.serve
    outbox = FrameOutbox(loop, settings.frame_queue)
    session: LiveSession | None = None
    tasks: list[asyncio.Task] = []
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text, data = message.get("text"), message.get("bytes")
            try:
                if data is not None:
                    if session is None:
                        raise protocol.ProtocolError(
                            "no_session", "audio before start: send a start message first"
                        )
                    try:
                        session.push_pcm16(data)
                    except InputError as e:
                        raise protocol.ProtocolError("bad_audio", str(e)) from e
                    while session.audio_ahead_s() > settings.max_audio_ahead_s and not session.ended:
                        # back-pressure: stop reading until the frames catch up (the client is not idle: it
                        # cannot send while we wait); a client that went away shows as a failed frame send
                        session.hold()
                        if tasks and tasks[0].done():
                            return
                        await asyncio.sleep(0.05)
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
                    session.end()
                else:  # cancel
                    await loop.run_in_executor(None, session.cancel)
            except protocol.ProtocolError as e:
                await _fail(ws, e.code, e.message, protocol.CLOSE_PROTOCOL)
                return
            if tasks and tasks[0].done():
                return
    except WebSocketDisconnect:
        return
    except Exception:  # a bug of ours: logged with its traceback; this connection ends, the server goes on
        log.exception("WebSocket session %s failed", sid)
        await _fail(ws, "server_error", "the server failed on this message (logged)", protocol.CLOSE_INTERNAL)
        return
    finally:
        for task in tasks:
            task.cancel()
        if session is not None and not session.ended:
            await loop.run_in_executor(None, session.cancel, "disconnect")
        elif session is not None:
            await loop.run_in_executor(None, session.join)


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
