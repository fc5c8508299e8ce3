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
import itertools
import json
import logging
import secrets
import tempfile
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse
from starlette.websockets import WebSocketState

from ditto_research.config import compose, to_config
from ditto_research.config.schema import InferConfig
from ditto_research.errors import ConfigError, DittoError, InputError
from ditto_research.pipeline.engine import Engine
from ditto_research.serve import protocol
from ditto_research.serve.config import ServeConfig, is_loopback
from ditto_research.serve.live import EndOfFrames, FrameOutbox, LiveFrame, LiveSession, limit_malloc_arenas
from ditto_research.serve.options import session_overrides
from ditto_research.serve.portraits import PortraitStore

log = logging.getLogger(__name__)

__all__ = ["ServerState", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"


@dataclass
class ServerState:
    """Everything the app serves from: config, engine, portraits, the sessions in flight."""

    cfg: ServeConfig
    engine: Engine
    store: PortraitStore
    infer_overrides: list[str]
    folder: tempfile.TemporaryDirectory
    sessions: dict[str, LiveSession] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count = field(default_factory=itertools.count)

    @classmethod
    def build(cls, cfg: ServeConfig, overrides: list[str]) -> ServerState:
        """Load the engine and register the server's portraits (errors here stop the server at start-up)."""
        limit_malloc_arenas()  # a long-running process that starts threads per session: keep its heap flat
        engine = Engine(cfg.infer_config())
        engine.load()
        folder = tempfile.TemporaryDirectory(prefix="ditto-serve-")
        settings = cfg.serve
        store = PortraitStore(
            engine,
            Path(folder.name),
            int(settings.max_upload_mb * 2**20),
            max_uploads=settings.max_portraits,
            max_upload_disk_bytes=int(settings.max_portrait_mb * 2**20),
        )
        paths = list(cfg.serve.portraits)
        if not paths:
            from ditto_research.examples import example_source

            paths = [str(example_source())]
        for path in paths:
            portrait = store.add_file(path)
            store.registered(portrait.id)  # a server portrait without a usable face is a start-up error
        infer = [o for o in overrides if not o.lstrip("+~").startswith(("serve.", "hydra"))]
        return cls(cfg, engine, store, ["mode=online", *infer], folder)

    # ---- admission ---------------------------------------------------------------------------------------

    def admit(self, session: LiveSession | None = None) -> str | None:
        """A session id, or None when ``max_sessions`` are in use."""
        with self._lock:
            if len(self.sessions) >= self.cfg.serve.max_sessions:
                return None
            sid = f"s{next(self._ids)}-{secrets.token_hex(3)}"
            self.sessions[sid] = session  # type: ignore[assignment]  # set for real once started
            return sid

    def release(self, sid: str) -> None:
        with self._lock:
            self.sessions.pop(sid, None)

    def busy_message(self) -> str:
        n = self.cfg.serve.max_sessions
        return f"server busy: {n} of {n} sessions in use (serve.max_sessions); try again later"

    # ---- sessions ----------------------------------------------------------------------------------------

    def session_engine(self, options: tuple[str, ...]) -> Engine:
        """The engine for a session's options (shares the networks). The options are untrusted: each is
        checked against the allow-list of :mod:`ditto_research.serve.options` and written out again before
        Hydra sees it (ConfigError naming the first bad one)."""
        if not options:
            return self.engine
        checked = session_overrides(options, self.cfg.serve.max_sampler_steps)
        typed: InferConfig = to_config(compose("infer", [*self.infer_overrides, *checked]))
        return self.engine.derive(InferConfig(**{**typed.__dict__, "progress": False}))

    def new_session(
        self, sid: str, portrait: str, options: tuple[str, ...], outbox: FrameOutbox, idle: bool = True
    ) -> LiveSession:
        """Register (or reuse) the portrait, build and start the session (run it off the event loop).
        ``idle=False``: no silence is ever inserted (a client streaming a file)."""
        source = self.store.registered(portrait)
        engine = self.session_engine(options)
        session = LiveSession(engine, source, self.cfg.serve, outbox, idle=idle)
        with self._lock:
            self.sessions[sid] = session
        session.start()
        return session

    def close(self) -> None:
        """Cancel every session and free the portraits and the engine's front-end."""
        with self._lock:
            sessions = [s for s in self.sessions.values() if s is not None]
        for session in sessions:
            session.cancel("shutdown")
        self.store.close()
        self.engine.close()
        self.folder.cleanup()


def _token_ok(state: ServerState, header: str | None, query: str | None) -> bool:
    token = state.cfg.serve.token
    if token is None:
        return True
    given = query or (header[7:] if header and header.lower().startswith("bearer ") else None)
    return given is not None and secrets.compare_digest(str(given), str(token))


def _host_name(host_header: str) -> str:
    """The host of a Host header, without the port (``[::1]:8000`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


def refusal(state: ServerState, headers: Mapping[str, str], changes_state: bool) -> str | None:
    """Why a request may not proceed (a sentence), or None.

    - Without a token (a loopback server), the Host header must name this machine (a loopback name or
      ``serve.allowed_hosts``): a page on another site cannot reach the server through a DNS name it
      controls and re-points to 127.0.0.1 (DNS rebinding).
    - The WebSocket and the state-changing routes need the request's Origin, when it has one (browsers always
      send it there; programs usually do not), to be this server's own origin or one of
      ``serve.cors_origins``: any page open in the user's browser could otherwise drive the server.
    """
    settings = state.cfg.serve
    host = headers.get("host", "")
    if settings.token is None:
        name = _host_name(host).lower()
        if not (is_loopback(name) or name in {h.lower() for h in settings.allowed_hosts}):
            return (
                f"Host {host[:60]!r} is not this machine's name (serve.allowed_hosts lists others); open "
                "the server as http://127.0.0.1:PORT/"
            )
    origin = headers.get("origin")
    if changes_state and origin is not None:
        own = {f"http://{host}", f"https://{host}"}
        if origin not in own and origin not in set(settings.cors_origins):
            return (
                f"origin {origin[:60]!r} not allowed (serve.cors_origins lists others); use the server's "
                "own page"
            )
    return None


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
        if not _token_ok(state, request.headers.get("authorization"), request.query_params.get("token")):
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
        if not _token_ok(state, ws.headers.get("authorization"), ws.query_params.get("token")):
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
