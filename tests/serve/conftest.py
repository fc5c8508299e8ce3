"""A real uvicorn server on 127.0.0.1 (a free port) in this process, over model=tiny, for protocol tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

TINY = ["model=tiny", "+preset=realtime", "face=mediapipe", "audio_encoder=untrained"]


@dataclass
class RunningServer:
    url: str  # http://127.0.0.1:PORT
    state: object
    server: object
    thread: threading.Thread

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def stop(self) -> None:
        self.server.should_exit = True  # type: ignore[attr-defined]
        self.thread.join(timeout=30)


def start_server(overrides: list[str]) -> RunningServer:
    import uvicorn

    from ditto_research.config import compose, to_config
    from ditto_research.serve.__main__ import bind, uvicorn_config
    from ditto_research.serve.app import ServerState, create_app
    from ditto_research.serve.config import ServeConfig, register_serve_configs

    register_serve_configs()
    cfg = to_config(compose("serve", overrides), ServeConfig)
    state = ServerState.build(cfg, overrides)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn_config(create_app(state), cfg))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    port = sock.getsockname()[1]
    return RunningServer(f"http://127.0.0.1:{port}", state, server, thread)


# The limits every test server runs with (tests add their own overrides after these).
LIMITS = [
    *TINY,
    "serve.max_sessions=4",
    "serve.idle_timeout_s=20",
    "serve.max_message_kb=64",
    "serve.max_upload_mb=1",
]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = start_server(LIMITS)
    yield running
    running.stop()
