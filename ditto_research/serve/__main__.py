"""``python -m ditto_research.serve [+preset=realtime] [group=option ...] [serve.key=value ...]``.

Composes ``conf/serve.yaml``, refuses a non-loopback bind without ``serve.token``, loads the engine once,
binds the socket (``serve.port=0``: a free port) and prints ``serving on http://HOST:PORT/`` before the first
request can arrive. SIGINT / SIGTERM stop it cleanly: sessions cancelled, threads joined, exit 0.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import traceback
from collections.abc import Iterator

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ditto_research.config import CONF_DIR, check_command_line_or_exit, to_config
from ditto_research.errors import DittoError
from ditto_research.infer import BUG_LINE
from ditto_research.logs import configure_logging
from ditto_research.serve.config import ServeConfig, is_loopback, register_serve_configs

register_serve_configs()


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
        """uvicorn's server, stopping gracefully on SIGINT / SIGTERM and then exiting normally (uvicorn
        re-raises the signal after shutdown, which would turn a clean stop into exit code 130 / 143)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def serve(cfg: ServeConfig, overrides: list[str]) -> None:
    import uvicorn

    from ditto_research.serve.app import ServerState, create_app

    check_bind(cfg)
    sock = bind(cfg.serve.host, cfg.serve.port)
    state = ServerState.build(cfg, overrides)
    app = create_app(state)
    config = uvicorn.Config(
        app,
        log_level=cfg.serve.log_level,
        ws_max_size=cfg.serve.max_message_kb * 1024,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = _server_class()(config)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving on http://{shown}:{port}/ (WebSocket ws://{shown}:{port}/ws)", flush=True)
    server.run(sockets=[sock])
    print("server stopped: sessions closed", flush=True)


@hydra.main(config_path=str(CONF_DIR), config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    configure_logging(bool(cfg.get("verbose", False)))
    try:
        typed = to_config(cfg, ServeConfig)
        serve(typed, list(HydraConfig.get().overrides.task))
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception:  # noqa: BLE001 - a bug: keep the whole traceback, then say so
        traceback.print_exc()
        print(BUG_LINE, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    check_command_line_or_exit("serve")
    main()
