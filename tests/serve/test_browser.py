"""The page and the WebRTC transport in a real headless Chromium, against a real server subprocess.

Chromium's fake microphone plays a speech WAV; the page offers it to ``POST /api/offer``, and the test waits
(bounded) for the talking head to play in the <video> element, for the speech to come back on the audio track
and for the latency numbers of the "stats" data channel; Stop must free the server's session.
``DITTO_UPDATE_SCREENSHOT=1`` writes the screenshot to docs/serve.png (else to the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ditto_research.audio.io import load_audio, write_wav
from ditto_research.examples import synthetic_speech

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent (see .ci/run)"),
]
REPO = Path(__file__).resolve().parents[2]
TINY = ["model=tiny", "+preset=realtime", "face=mediapipe", "audio_encoder=untrained"]
START_TIMEOUT_S = 120
FRAMES_TIMEOUT_S = 90
WAV_RATE = 48000
SPEECH = "Hello. This is a live talking head, streamed over WebRTC from the research server."


def _read_url(process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> str:
    """The http:// URL from the server's "serving on" line (bounded wait; RuntimeError with its output)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("serving on "):
                return line.split()[2]
        time.sleep(0.1)
    tail = log.read_text(errors="replace").splitlines()[-20:]
    raise RuntimeError("the server did not start:\n" + "\n".join(tail))


def _sessions(url: str) -> int:
    with urllib.request.urlopen(url + "api/health", timeout=10) as response:
        return int(json.load(response)["sessions"])


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("browser-server") / "server.log"
    command = [sys.executable, "-m", "ditto_research.serve", *TINY, "serve.port=0", "serve.idle_timeout_s=30"]
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
                process.wait(timeout=10)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few seconds of speech at 48 kHz: espeak-ng when installed, else the synthetic speech-like signal."""
    folder = tmp_path_factory.mktemp("browser-audio")
    target = folder / "speech.wav"
    espeak = shutil.which("espeak-ng")
    if espeak is not None:
        raw = folder / "espeak.wav"
        subprocess.run([espeak, "-w", str(raw), SPEECH], check=True, timeout=60, capture_output=True)
        return write_wav(target, load_audio(raw, WAV_RATE), WAV_RATE)
    return write_wav(target, synthetic_speech(6.0, WAV_RATE), WAV_RATE)


def _launch(playwright: object, wav: Path) -> object:
    args = [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    chromium = playwright.chromium  # type: ignore[attr-defined]
    return chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)


def _number(page: object, element_id: str) -> float | None:
    text = page.text_content(f"#{element_id}")  # type: ignore[attr-defined]
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


@pytest.mark.timeout(400)
def test_page_streams_the_talking_head_over_webrtc(server_url: str, speech_wav: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = _launch(playwright, speech_wav)
        try:
            page = browser.new_page(viewport={"width": 1180, "height": 760})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server_url, timeout=30_000)
            page.wait_for_selector("#portrait option", state="attached", timeout=30_000)
            page.click("#start")

            # Frames arrive and play: the <video> clock runs and the page counts presented frames.
            page.wait_for_function(
                "() => { const v = document.getElementById('video');"
                " return v.currentTime > 0.3 && Number(v.dataset.shown || 0) >= 10; }",
                timeout=FRAMES_TIMEOUT_S * 1000,
            )
            assert page.get_attribute("#state", "data-state") == "streaming", page.text_content("#message")

            # The stats channel fills the numbers (first frame, lag now, p50 / p95, rendered frames).
            page.wait_for_function(
                "() => ['first_frame_ms', 'lag_ms', 'lag_p50_ms', 'lag_p95_ms', 'frames']"
                ".every(id => Number.isFinite(parseFloat(document.getElementById(id).textContent)))"
                " && parseFloat(document.getElementById('frames').textContent) >= 10",
                timeout=30_000,
            )
            first, p50, p95 = (_number(page, k) for k in ("first_frame_ms", "lag_p50_ms", "lag_p95_ms"))
            assert first is not None and first > 0
            assert p50 is not None and p95 is not None and 0 < p50 <= p95
            rendered = _number(page, "frames")
            assert rendered is not None and rendered >= 10

            # The speech comes back on the audio track next to the video.
            inbound = page.evaluate(
                "async () => { const out = {}; (await call.pc.getStats()).forEach(r => {"
                " if (r.type === 'inbound-rtp') out[r.kind] = {packets: r.packetsReceived,"
                " decoded: r.framesDecoded || 0, width: r.frameWidth || 0}; }); return out; }"
            )
            assert inbound["audio"]["packets"] > 25, inbound
            assert inbound["video"]["decoded"] >= 10 and inbound["video"]["width"] > 0, inbound

            update = os.environ.get("DITTO_UPDATE_SCREENSHOT") == "1"
            shot = REPO / "docs" / "serve.png" if update else tmp_path / "serve.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.wait_for_timeout(1500)  # one more stats tick, so the picture shows current numbers
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

            # Stop ends the call on both sides: the page says so and the server frees the session.
            page.click("#stop")
            assert page.get_attribute("#state", "data-state") == "ended"
            poster = page.get_attribute("#video", "poster") or ""  # the last frame stays on screen
            assert poster.startswith("data:image/jpeg")
            deadline = time.monotonic() + 30
            while _sessions(server_url) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _sessions(server_url) == 0
            assert not errors, errors
        finally:
            browser.close()
