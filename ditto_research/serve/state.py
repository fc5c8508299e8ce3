"""What the live server serves from: its config, the engine (networks loaded once), the portrait store and the
sessions in flight with their admission (one :class:`ServerState` per server; both transports use it)."""

from __future__ import annotations

import itertools
import secrets
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from ditto_research.config import compose, to_config
from ditto_research.config.schema import InferConfig
from ditto_research.pipeline.engine import Engine
from ditto_research.serve.config import ServeConfig
from ditto_research.serve.live import FrameOutbox, LiveSession, limit_malloc_arenas
from ditto_research.serve.options import session_overrides
from ditto_research.serve.portraits import PortraitStore

__all__ = ["ServerState"]


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
        engine = Engine(cfg)
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
        return self.engine.derive(replace(typed, progress=False))

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
