"""Audio a WebSocket client sends far ahead of the frames is held, not left in the socket: a cancel or ping
behind it is answered at once, an end waits for it, and only beyond serve.max_held_audio_s does the server
stop reading. Bounded in messages and time; a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from ditto_research.audio.io import num_video_frames
from tests.serve.conftest import LIMITS, RunningServer, start_server
from tests.serve.test_ws import assert_complete, collect, pcm16, start, wait_no_session_threads

AHEAD_S = 0.5


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = start_server([*LIMITS, f"serve.max_audio_ahead_s={AHEAD_S}", "serve.max_held_audio_s=40"])
    yield running
    running.stop()


def _send_all(ws, audio: bytes, sent: threading.Event) -> None:
    for i in range(0, len(audio), 6400):  # 200 ms messages, as fast as the socket takes them
        ws.send(audio[i : i + 6400])
    sent.set()


def test_cancel_behind_held_audio_stops_at_once(server):
    audio = pcm16(30.0)  # 60x what may run ahead of the frames
    with connect(server.ws, open_timeout=30, close_timeout=10) as ws:
        start(ws, server, idle=False)
        sent = threading.Event()
        sender = threading.Thread(target=_send_all, args=(ws, audio, sent), daemon=True)
        sender.start()
        assert sent.wait(20), "the server stopped reading although the audio fits serve.max_held_audio_s"
        ws.send(json.dumps({"type": "ping"}))
        asked = time.monotonic()
        ws.send(json.dumps({"type": "cancel"}))
        frames, texts = collect(ws, 60)
        answered = time.monotonic() - asked
        sender.join(5)
    pongs = [t for t in texts if t["type"] == "pong"]
    done = texts[-1]
    assert pongs and done["type"] == "done" and done["reason"] == "cancel", texts[-3:]
    assert answered < 5.0, f"cancel took {answered:.1f} s behind the held audio"
    assert done["frames"] < num_video_frames(len(audio) // 2) // 2  # stopped early, not after the audio
    assert wait_no_session_threads() == []


def test_end_waits_for_the_held_audio(server):
    audio = pcm16(1.5)  # 3x the allowed lead: most of it is held when "end" arrives
    with connect(server.ws, open_timeout=30, close_timeout=10) as ws:
        start(ws, server, idle=False)
        for i in range(0, len(audio), 6400):
            ws.send(audio[i : i + 6400])
        ws.send(json.dumps({"type": "end"}))
        frames, texts = collect(ws)
    assert_complete(frames, texts[-1], num_video_frames(len(audio) // 2))
    assert wait_no_session_threads() == []


def test_audio_after_end_is_refused_even_while_held(server):
    with connect(server.ws, open_timeout=30, close_timeout=10) as ws:
        start(ws, server, idle=False)
        audio = pcm16(1.5)
        for i in range(0, len(audio), 6400):
            ws.send(audio[i : i + 6400])
        ws.send(json.dumps({"type": "end"}))
        ws.send(pcm16(0.2))
        frames, texts = collect(ws, 120)
    errors = [t for t in texts if t["type"] == "error"]
    assert errors and errors[0]["code"] == "bad_audio" and "audio after end" in errors[0]["message"], texts
    assert wait_no_session_threads() == []
