"""``python -m ditto_research.serve [+preset=realtime] [group=option ...] [serve.key=value ...]``.

Composes ``conf/serve.yaml``, refuses a non-loopback bind without ``serve.token``, loads the engine once,
binds the socket (``serve.port=0``: a free port) and prints ``serving on http://HOST:PORT/`` before the first
request can arrive. Once serving, SIGINT / SIGTERM / SIGHUP stop it cleanly: sessions cancelled, threads
joined, exit 0. Before that (loading the engine), a stop is the shell's (:mod:`ditto_research.apps`):
``interrupted: ...`` and exit 128 + signal; errors too: one line and exit 2, or a bug's traceback and exit 1.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from collections.abc import Iterator

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ditto_research.apps import HydraApp
from ditto_research.config import to_config
from ditto_research.errors import DittoError
from ditto_research.logs import configure_logging
from ditto_research.serve.config import ServeConfig, is_loopback, register_serve_configs

register_serve_configs()

APP = HydraApp("serve", stopped="the server was stopped while starting")

# The signals that stop a serving server gracefully (uvicorn's shutdown, then exit 0).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def check_bind(cfg: ServeConfig) -> None:
    """A non-loopback address needs a token (DittoError otherwise)."""
    if not is_loopback(cfg.serve.host) and not cfg.serve.token:
        raise DittoError(
            f"serve.host={cfg.serve.host} is reachable from other machines; set serve.token=SECRET "
            "(clients send "
            "it as a bearer token or ?token=) or bind serve.host=127.0.0.1"
        )


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise DittoError(
            f"cannot listen on {host}:{port} ({e.strerror}); choose another serve.port (0 = free)"
        ) from e
    sock.listen(128)
    return sock


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, stopping gracefully on SIGINT / SIGTERM / SIGHUP and then exiting normally
        (uvicorn re-raises the signal after shutdown, which would turn a clean stop into exit code 130 / 143;
        it leaves SIGHUP to the shell, whose handler would end the server without its graceful shutdown)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def uvicorn_config(app: object, cfg: ServeConfig):  # noqa: ANN201 - uvicorn.Config, imported lazily
    """uvicorn's settings for the app. WebSocket keep-alive pings are off: back-pressure stops reading a
    client's socket (serve.max_audio_ahead_s), so its pongs would go unread and a slow render would close a
    healthy client with 1011; dead peers show as failed frame sends, and sessions have their own idle and
    length limits."""
    import uvicorn

    return uvicorn.Config(
        app,
        log_level=cfg.serve.log_level,
        ws_max_size=cfg.serve.max_message_kb * 1024,
        ws_ping_interval=None,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


def serve(cfg: ServeConfig, overrides: list[str]) -> None:
    from ditto_research.serve.app import ServerState, create_app

    check_bind(cfg)
    sock = bind(cfg.serve.host, cfg.serve.port)
    state = ServerState.build(cfg, overrides)
    app = create_app(state)
    server = _server_class()(uvicorn_config(app, cfg))
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{port}/ (WebSocket ws://{shown}:{port}/ws)", flush=True)
    server.run(sockets=[sock])
    print("server stopped: sessions closed", flush=True)


@APP.main
def main(cfg: DictConfig) -> None:
    configure_logging(bool(cfg.get("verbose", False)))
    serve(to_config(cfg, ServeConfig), list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    APP.run(main)
