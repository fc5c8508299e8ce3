"""The WebSocket client (``python -m ditto_research.serve.client``) against a real server subprocess.

The server is ``python -m ditto_research.serve`` itself (model=tiny, a free port), so the CLI's whole path is
exercised: Hydra's entry point, the upload, the stream, the MP4. Every wait is bounded; the server is killed
in the fixture's finalizer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from ditto_research.audio.io import num_video_frames, write_wav
from ditto_research.examples import example_source, synthetic_speech
from ditto_research.media.writer import probe_video
from ditto_research.serve.client import _client_numbers, _FrameSink
from tests.serve.conftest import TINY

START_TIMEOUT_S = 120
CLI_TIMEOUT_S = 300


def _read_url(process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> str:
    """The ws:// URL from the server's "serving on" line (bounded wait; RuntimeError with its output)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("serving on "):
                return line.split("WebSocket ")[1].rstrip(")")
        time.sleep(0.1)
    tail = log.read_text(errors="replace").splitlines()[-20:]
    raise RuntimeError("the server did not start:\n" + "\n".join(tail))


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [sys.executable, "-m", "ditto_research.serve", *TINY, "serve.port=0", "serve.idle_timeout_s=20"]
    with log.open("wb") as out:  # a file, not a pipe: nobody has to drain it
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield _read_url(process, log, START_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def client(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ditto_research.serve.client", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wav(tmp_path_factory.mktemp("client") / "speech.wav", synthetic_speech(1.5))


def test_the_cli_streams_a_file_into_an_mp4_with_the_offline_frame_count(server_url, speech, tmp_path):
    output = tmp_path / "out.mp4"
    result = client(
        "--url",
        server_url,
        "--source",
        str(example_source()),
        "--audio",
        str(speech),
        "--output",
        str(output),
    )
    assert result.returncode == 0, result.stderr
    n = num_video_frames(int(1.5 * 16000))
    frames, fps, width, height, audio_s = probe_video(output)
    assert (frames, fps, width, height) == (n, 25.0, 512, 512)
    assert audio_s == pytest.approx(1.5, abs=0.05)
    assert f"frames: {n} (0 dropped" in result.stdout and "first frame:" in result.stdout
    assert not list(tmp_path.glob(".out.mp4*")), "a temporary file was left beside the output"


def test_a_missing_audio_file_is_one_line(server_url, tmp_path):
    line = one_error_line(
        client("--url", server_url, "--portrait", "x", "--audio", str(tmp_path / "nope.wav"))
    )
    assert "audio file not found" in line and "nope.wav" in line


def test_a_wrong_port_names_the_url(speech):
    with socket.socket() as s:  # a port nobody listens on (bound, never listening)
        s.bind(("127.0.0.1", 0))
        url = f"ws://127.0.0.1:{s.getsockname()[1]}/ws"
        line = one_error_line(client("--url", url, "--portrait", "x", "--audio", str(speech)))
    assert url in line and "connection refused" in line


def test_a_session_option_the_server_refuses_is_its_bad_options_message(server_url, speech):
    line = one_error_line(
        client(
            "--url",
            server_url,
            "--source",
            str(example_source()),
            "--audio",
            str(speech),
            "--option",
            "model=ditto",
        )
    )
    assert "(bad_options)" in line and "'model=ditto' is not per-session" in line


def test_an_unknown_control_option_is_a_bad_options_message(server_url, speech):
    line = one_error_line(
        client(
            "--url",
            server_url,
            "--source",
            str(example_source()),
            "--audio",
            str(speech),
            "--option",
            "control.nope=1",
        )
    )
    assert "(bad_options)" in line and "nope" in line


# ---- without a server --------------------------------------------------------------------------------------


def _jpeg(value: int) -> bytes:
    return cv2.imencode(".jpg", np.full((32, 32, 3), value, np.uint8))[1].tobytes()


def test_the_sink_fills_gaps_in_index_order_and_counts_them(tmp_path):
    async def feed(sink: _FrameSink) -> None:
        for index in (1, 2, 2, 4):  # 0 missing (leading), 2 duplicated, 3 missing, 5 and 6 missing (trailing)
            await sink.put(index, _jpeg(40 * index))

    sink = _FrameSink(tmp_path / "gaps.mp4", overwrite=False)
    asyncio.run(feed(sink))
    path = sink.finish(7, None)
    assert sink.dropped == 4 and sink.next_index == 7
    assert probe_video(path)[0] == 7


def test_client_lag_counts_from_when_each_frame_s_audio_was_sent():
    sent = [(640, 10.0), (1280, 10.04), (1600, 10.08)]  # the last piece is a partial frame
    arrivals = {0: 10.5, 1: 10.6, 2: 10.7, 3: 10.8}  # frame 3 is idle silence (past the 1600 samples)
    numbers = _client_numbers(arrivals, sent, total=1600)
    assert numbers["first_frame_ms"] == pytest.approx(500.0)
    assert numbers["lag_p50_ms"] == pytest.approx(560.0)  # lags 500, 560, 620 ms
    assert numbers["fps"] == pytest.approx(10.0)
