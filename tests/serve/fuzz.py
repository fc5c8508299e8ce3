"""Hostile traffic for the live server: random and mutated WebSocket conversations and HTTP requests.

Used by tests/serve/test_fuzz.py (a fixed count, in CI) and benchmarks/serve_hostile.py (peak RSS). Every
generator is driven by one ``random.Random``, so a failing case is replayed from its seed; every client call
is bounded in time. Targets are 127.0.0.1 servers started by the caller, nothing else.
"""

from __future__ import annotations

import json
import random
import struct
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

HOSTILE_OPTIONS = [
    "mode.chunksize=[3000000,5,2]",
    "mode.chunksize=[3,500000,2]",
    "mode.chunksize=[-1,0,2]",
    "sampler.steps=1000000",
    "sampler.steps=${oc.env:HOME}",
    "control.emo=${oc.env:PATH}",
    "+control.overall_ctrl_info.delta_yaw=${oc.env:USER}",
    "control.ctrl_info_file=/etc/passwd",
    "control.delta_eye_arr=/proc/self/environ",
    "control.emo=/etc/hostname.npy",
    "motion.v_min_max_for_clip=/dev/zero",
    "model=ditto",
    "backend.device=cuda",
    "hydra.run.dir=/",
    "motion.overlap_v2=79",
    "motion.smo_k_d=1000001",
    "control.fade_in=99999999999",
    "control.ctrl_info.99999999.delta_yaw=1",
    "control.emo=" + "[" * 3000,
    "control.delta_eye_open_n=[" + ",".join(["1"] * 1000) + "]",
    "sampler.steps=choice(1,2,3)",
    "~control.emo",
    "sampler@x=ddim",
    "x" * 10000,
    "=",
    "control.emo=\x00",
    "control.overall_ctrl_info.delta_exp=[" + ",".join(["1e308"] * 63) + "]",
    "control.overall_ctrl_info.delta_yaw=nan",
]
ALLOWED_OPTIONS = [
    "sampler=dpmpp_2m",
    "sampler.steps=2",
    "control.emo=happy",
    "control.emo=[3,4]",
    "mode.chunksize=[3,5,2]",
    "+control.overall_ctrl_info.delta_yaw=5",
    "control.seed=7",
]
ORIGINS = [None] * 8 + ["http://evil.example", "null", "http://127.0.0.1:1", "file://", "x" * 300]
ROUTES = [
    "/",
    "/api/health",
    "/api/portraits",
    "/api/offer",
    "/ws",
    "/static/app.js",
    "/static/..%2f..%2fetc",
    "/static/" + "a" * 500,
    "/nope",
    "/api/portraits/../../x",
]
CONTENT_TYPES = [
    None,
    "text/plain",
    "image/png",
    "application/json",
    "multipart/form-data; boundary=x",
    "image/" + "x" * 200,
    "application/x-www-form-urlencoded",
]


def junk_value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value of any type, sometimes huge or deep."""
    kind = rng.randrange(12 if depth < 3 else 8)
    return [
        lambda: None,
        lambda: rng.choice([True, False]),
        lambda: rng.choice([0, -1, 1, 2**31, 2**63, -(2**64), 16000, 44100]),
        lambda: rng.choice([0.5, -1e308, 1e308, float("nan"), float("inf")]),
        lambda: rng.choice(
            ["", "start", "pcm16", "../../etc/passwd", "${oc.env:HOME}", "\u202e\ufeff", "é" * 50]
        ),
        lambda: "x" * rng.choice([1, 1000, 30000]),
        lambda: rng.choice(HOSTILE_OPTIONS),
        lambda: rng.randbytes(rng.randrange(1, 64)).decode("latin-1"),
        lambda: [junk_value(rng, depth + 1) for _ in range(rng.randrange(4))],
        lambda: {rng.choice(["type", "portrait", "options", "a"]): junk_value(rng, depth + 1)},
        lambda: [rng.choice(HOSTILE_OPTIONS + ALLOWED_OPTIONS) for _ in range(rng.randrange(1, 80))],
        lambda: {"type": rng.choice(["start", "end", "ping"]), "options": junk_value(rng, depth + 1)},
    ][kind]()


def text_message(rng: random.Random, portrait: str) -> str:
    """One text message: a mutated protocol message, nested JSON, or not JSON at all."""
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice(["[", '{"a":', '{"type":[']) * rng.choice([100, 10_000, 30_000])
    if kind == 1:
        return rng.randbytes(rng.randrange(1, 2000)).decode("latin-1")
    message: dict[str, Any] = {"type": rng.choice(["start", "end", "cancel", "ping", "stop", "", 7, None])}
    if message["type"] == "start" or kind == 2:
        message |= {
            "portrait": rng.choice([portrait, portrait, "nope", "", 0, None, "../" * 20]),
            "options": rng.choice(
                [[], [rng.choice(HOSTILE_OPTIONS)], rng.sample(ALLOWED_OPTIONS, 2), junk_value(rng)]
            ),
        }
        if rng.random() < 0.3:
            message["sample_rate"] = junk_value(rng)
        if rng.random() < 0.3:
            message["idle"] = junk_value(rng)
    for _ in range(rng.randrange(3)):
        message[rng.choice(["x", "portrait", "format", "options"])] = junk_value(rng)
    return json.dumps(message)


def binary_message(rng: random.Random) -> bytes:
    """Audio, junk, an odd number of bytes, or over the server's message limit."""
    size = rng.choice([0, 1, 3, 640, 6401, 32_000, 70_000])
    if rng.random() < 0.5 and size % 2 == 0:
        return struct.pack(f"<{size // 2}h", *[rng.randrange(-32768, 32768) for _ in range(size // 2)])
    return rng.randbytes(size)


@dataclass
class FuzzStats:
    """What the server answered, by kind (for the report; the checks are the caller's)."""

    ws: int = 0
    http: int = 0
    close_codes: dict[int | None, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)  # HTTP 5xx or an "error" with code server_error


def ws_conversation(
    url: str, rng: random.Random, portrait: str, stats: FuzzStats, limit_s: float = 3.0
) -> None:
    """One WebSocket connection sending a few random messages; bounded by ``limit_s``."""
    headers = {} if (origin := rng.choice(ORIGINS)) is None else {"Origin": origin}
    deadline = time.monotonic() + limit_s
    try:
        with connect(
            url, open_timeout=limit_s, close_timeout=1, additional_headers=headers, max_size=2**22
        ) as ws:
            for _ in range(rng.randrange(1, 6)):
                if rng.random() < 0.6:
                    ws.send(text_message(rng, portrait))
                else:
                    ws.send(binary_message(rng))
                if rng.random() < 0.2:
                    time.sleep(rng.random() * 0.3)
            if rng.random() < 0.5:
                ws.send(json.dumps({"type": rng.choice(["end", "cancel"])}))
            while time.monotonic() < deadline:
                message = ws.recv(timeout=max(0.05, deadline - time.monotonic()))
                if isinstance(message, str):
                    reply = json.loads(message)
                    if reply.get("code") == "server_error":
                        stats.server_errors.append(reply.get("message", ""))
            code = ws.close_code
    except (ConnectionClosed, TimeoutError) as e:
        code = getattr(getattr(e, "rcvd", None), "code", None)
    except (InvalidHandshake, OSError):
        code = -1
    stats.ws += 1
    stats.close_codes[code] = stats.close_codes.get(code, 0) + 1


def tiny_bomb_png(width: int, height: int) -> bytes:
    """A PNG header declaring width x height with a truncated image stream (what a bomb looks like first)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))


def http_request(base: str, rng: random.Random, stats: FuzzStats, limit_s: float = 10.0) -> None:
    """One random HTTP request; 5xx answers are recorded as server errors."""
    method = rng.choice(["GET", "POST", "POST", "PUT", "DELETE", "OPTIONS"])
    body = None
    if method in ("POST", "PUT"):
        body = rng.choice(
            [
                b"",
                rng.randbytes(rng.randrange(1, 5000)),
                b"[" * 200_000,
                json.dumps({"sdp": junk_value(rng), "type": "offer", "portrait": junk_value(rng)}).encode(),
                tiny_bomb_png(rng.choice([20000, 60000, 2**31 - 1]), rng.choice([20000, 60000])),
                b"\x89PNG" + b"\x00" * rng.choice([10, 2 * 2**20]),
            ]
        )
    headers = {}
    if (kind := rng.choice(CONTENT_TYPES)) is not None:
        headers["Content-Type"] = kind
    if (origin := rng.choice(ORIGINS)) is not None:
        headers["Origin"] = origin
    if rng.random() < 0.3:
        headers["X-Filename"] = rng.choice(["../../x", "a" * 1000, "\u00e9\u00ff.png", "con"])
    request = urllib.request.Request(base + rng.choice(ROUTES), data=body, method=method, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=limit_s) as response:
            status = response.status
            response.read(1 << 16)
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, (BrokenPipeError, ConnectionResetError)) and body and len(body) > 65536:
            status = -2  # answered (e.g. 405, 413) and closed before the whole body was sent: normal HTTP
        else:
            status = -1
            stats.server_errors.append(f"{method} no answer: {e}")
    stats.http += 1
    stats.statuses[status] = stats.statuses.get(status, 0) + 1
    if status >= 500:
        stats.server_errors.append(f"{method} -> HTTP {status}")
