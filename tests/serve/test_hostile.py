"""The live server against hostile clients and careless ones: each case of the hardening issue, on a real
uvicorn server on 127.0.0.1 (a free port) over model=tiny. Every loop is bounded in count and time."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.serve.conftest import LIMITS, RunningServer, start_server
from tests.serve.test_ws import collect, expect_error, pcm16, portrait_id, wait_no_session_threads

SECRET = "hunter2-do-not-echo"
MAX_PORTRAITS = 3


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[RunningServer]:
    running = start_server(
        [
            *LIMITS,
            f"serve.max_portraits={MAX_PORTRAITS}",
            "serve.max_lag_s=1.5",
            "serve.cors_origins=[http://allowed.example]",
        ]
    )
    yield running
    running.stop()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def health(server: RunningServer) -> dict:
    with urllib.request.urlopen(server.url + "/api/health", timeout=10) as r:
        return json.load(r)


def http(
    server: RunningServer, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.url + path, data=body, method="POST" if body is not None else "GET", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def refused_options(server: RunningServer, options: list[str]) -> str:
    with connect(server.ws, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start", "portrait": portrait_id(server), "options": options}))
        return expect_error(ws, "bad_options")["message"]


def face_png(shift: int) -> bytes:
    """A distinct portrait per ``shift`` (the astronaut, rolled a few pixels)."""
    image = np.roll(skdata.astronaut()[:, ::-1], shift, axis=1)
    return cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))[1].tobytes()


# ---- 1, 2, 4, 9: per-session options ---------------------------------------------------------------------


def test_unbounded_options_are_refused_before_any_work(hostile_server):
    before = rss_mb()
    for options in (
        ["mode.chunksize=[3000000,5,2]"],
        ["mode.chunksize=[3,500000,2]"],
        ["sampler.steps=1000"],
        ["motion.overlap_v2=79"],
        ["control.emo=" + json.dumps([[4]] * 2000).replace(" ", "")],
        ["control.delta_eye_open_n=[" + ",".join(["5"] * 500) + "]"],
        ["control.emo=3"] * 100,
    ):
        t0 = time.monotonic()
        message = refused_options(hostile_server, options)
        assert time.monotonic() - t0 < 10, options
        assert "refused" in message or "at most" in message, message
    assert health(hostile_server)["ok"]
    assert rss_mb() - before < 100


@pytest.mark.parametrize(
    "option",
    [
        "control.emo=${oc.env:DITTO_TEST_SECRET}",
        "sampler.steps=${oc.env:DITTO_TEST_SECRET}",
        "+control.overall_ctrl_info.delta_yaw=${oc.env:DITTO_TEST_SECRET}",
        "control.emo=[${oc.env:DITTO_TEST_SECRET}]",
    ],
)
def test_interpolations_are_refused_and_never_resolved(hostile_server, monkeypatch, option):
    monkeypatch.setenv("DITTO_TEST_SECRET", SECRET)
    message = refused_options(hostile_server, [option])
    assert SECRET not in message and "interpolation" in message


def test_clients_cannot_make_the_server_read_its_files(hostile_server, tmp_path):
    secret = tmp_path / "server_secrets.yaml"
    secret.write_text(f"db_password: {SECRET}\n0: {{delta_yaw: {SECRET}}}\n")
    answers = set()
    for path in (secret, tmp_path / "absent.yaml"):
        for key in ("control.ctrl_info_file", "control.delta_eye_arr", "motion.v_min_max_for_clip"):
            message = refused_options(hostile_server, [f"{key}={path}"])
            assert SECRET not in message and "db_password" not in message
            answers.add(message.replace(str(path), "PATH"))
    assert len(answers) == 3  # one answer per key, whether the path exists or not: nothing is probed
    message = refused_options(hostile_server, [f"control.emo={tmp_path}/emo.npy"])
    assert "cannot name files" in message


def test_allowed_options_still_run_a_session(hostile_server):
    options = [
        "sampler=dpmpp_2m",
        "sampler.steps=3",
        "mode.chunksize=[2,4,2]",
        "control.emo=[happy,neutral]",
        "+control.overall_ctrl_info.delta_yaw=5",
        "control.ctrl_info.3.delta_pitch=-4",
    ]
    with connect(hostile_server.ws, open_timeout=30, close_timeout=10) as ws:
        ws.send(
            json.dumps(
                {"type": "start", "portrait": portrait_id(hostile_server), "options": options, "idle": False}
            )
        )
        assert json.loads(ws.recv(timeout=120))["type"] == "ready"
        ws.send(pcm16(0.4))
        ws.send(json.dumps({"type": "end"}))
        frames, texts = collect(ws, 120)
    assert texts[-1]["type"] == "done" and texts[-1]["frames"] == 10, texts
    # a file client is never skipped; the pipeline's own latency is reported (the live-lag rule itself is
    # tested on a stand-in stream of known speed: tests/serve/test_live_lag.py)
    assert texts[-1]["skipped_s"] == 0 and texts[-1]["pipeline_ms"] > 0
    assert wait_no_session_threads() == []


# ---- 3: Origin and Host ------------------------------------------------------------------------------------


def test_other_origins_cannot_use_the_socket_or_upload(hostile_server):
    evil = {"Origin": "http://evil.example"}
    with connect(hostile_server.ws, open_timeout=30, additional_headers=evil) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1008 and "serve.cors_origins" in ws.close_reason
    before = len(http(hostile_server, "/api/portraits")[1])
    status, body = http(hostile_server, "/api/portraits", face_png(1), {**evil, "Content-Type": "image/png"})
    assert status == 403 and body["error"] == "forbidden"
    # text/plain is what a page may send anywhere without a preflight: refused even from the same origin
    own = {"Origin": hostile_server.url}
    status, body = http(hostile_server, "/api/portraits", face_png(1), {**own, "Content-Type": "text/plain"})
    assert status == 415 and "image/" in body["message"]
    assert len(http(hostile_server, "/api/portraits")[1]) == before  # nothing was stored
    status, body = http(hostile_server, "/api/offer", b"{}", {**evil, "Content-Type": "application/json"})
    assert status == 403
    # the server's own page, and a listed origin, may
    for origin in (hostile_server.url, "http://allowed.example"):
        with connect(hostile_server.ws, open_timeout=30, additional_headers={"Origin": origin}) as ws:
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=10)) == {"type": "pong"}


def test_a_foreign_host_name_is_refused_without_a_token(hostile_server):
    """DNS rebinding: a page at evil.example re-points its name to 127.0.0.1; its requests carry that Host."""
    port = hostile_server.url.rsplit(":", 1)[1]
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    status, body = http(hostile_server, "/api/portraits", None, rebound)
    assert status == 403 and "serve.allowed_hosts" in body["message"]
    sock = socket.create_connection(("127.0.0.1", int(port)), timeout=30)  # the name resolved to loopback
    with connect(f"ws://evil.example:{port}/ws", sock=sock, open_timeout=30) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1008
    assert http(hostile_server, "/api/health", None, {"Host": f"localhost:{port}"})[0] == 200


def test_refusal_rules():
    from types import SimpleNamespace

    from ditto_research.serve.access import refusal
    from ditto_research.serve.config import ServeSettings

    def state(**settings):
        return SimpleNamespace(cfg=SimpleNamespace(serve=ServeSettings(**settings)))

    plain = state()
    assert refusal(plain, {"host": "127.0.0.1:8000"}, True) is None  # a program: no Origin
    assert refusal(plain, {"host": "[::1]:8000", "origin": "http://[::1]:8000"}, True) is None
    assert refusal(plain, {"host": "localhost:8000", "origin": "http://evil.example"}, False) is None  # GET
    assert refusal(plain, {"host": "localhost:8000", "origin": "http://evil.example"}, True) is not None
    assert refusal(plain, {"host": "localhost:8000", "origin": "null"}, True) is not None
    assert refusal(plain, {"host": "my-box.local:8000"}, False) is not None
    assert refusal(state(allowed_hosts=["my-box.local"]), {"host": "my-box.local:8000"}, False) is None
    tokened = state(host="0.0.0.0", token="s3cret")
    assert refusal(tokened, {"host": "my-box.example:8000"}, False) is None  # the token is the check
    assert (
        refusal(tokened, {"host": "my-box.example:8000", "origin": "http://evil.example"}, True) is not None
    )


# ---- 6, 7: malformed and empty sessions --------------------------------------------------------------------


def test_deeply_nested_json_is_a_protocol_error(hostile_server):
    with connect(hostile_server.ws, open_timeout=30, close_timeout=10) as ws:
        ws.send("[" * 60_000)
        error = expect_error(ws, "bad_json")
        assert "nested" in error["message"] and ws.close_code == 1003
    status, body = http(hostile_server, "/api/offer", b"[" * 200_000, {"Content-Type": "application/json"})
    assert status == 400 and body["error"] == "bad_offer"
    status, body = http(hostile_server, "/api/offer", b"x" * 300_000, {"Content-Type": "application/json"})
    assert status == 413
    assert health(hostile_server)["ok"]


def test_start_then_end_without_audio_is_done_with_no_frames(hostile_server):
    for idle in (False, True):
        with connect(hostile_server.ws, open_timeout=30, close_timeout=10) as ws:
            ws.send(json.dumps({"type": "start", "portrait": portrait_id(hostile_server), "idle": idle}))
            assert json.loads(ws.recv(timeout=120))["type"] == "ready"
            ws.send(json.dumps({"type": "end"}))
            frames, texts = collect(ws, 60)
            assert ws.close_code == 1000, texts
        assert texts[-1]["type"] == "done" and texts[-1]["reason"] == "end", texts
        if not idle:
            assert frames == [] and texts[-1]["frames"] == 0
    assert wait_no_session_threads() == []


# ---- 8: the portrait store ---------------------------------------------------------------------------------


def test_uploads_are_evicted_least_recently_used(hostile_server):
    folder = Path(hostile_server.state.folder.name)
    ids = []
    for shift in range(2, 2 + MAX_PORTRAITS + 2):
        status, body = http(hostile_server, "/api/portraits", face_png(shift), {"Content-Type": "image/png"})
        assert status == 200, body
        ids.append(body["id"])
        if len(ids) == MAX_PORTRAITS:  # full: use the oldest again, so ids[1] and ids[2] are the least recent
            http(hostile_server, "/api/portraits", face_png(2), {"Content-Type": "image/png"})
    listed = {p["id"] for p in http(hostile_server, "/api/portraits")[1]}
    server_own = portrait_id(hostile_server)
    assert listed == {server_own, ids[0], *ids[-(MAX_PORTRAITS - 1) :]}  # ids[1], ids[2] least recently used
    assert sorted(p.stem for p in folder.iterdir()) == sorted(listed)
    with connect(hostile_server.ws, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start", "portrait": ids[1]}))
        assert "does not exist" in expect_error(ws, "no_portrait")["message"]
