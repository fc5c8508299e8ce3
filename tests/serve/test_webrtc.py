"""serve/webrtc.py without a browser: the tracks' timestamps and A/V alignment, and the offer's errors."""

from __future__ import annotations

import asyncio
import fractions
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from ditto_research.serve.live import EndOfFrames, FrameOutbox, LiveFrame
from ditto_research.serve.webrtc import CHUNK, FrameClock, SpeechTrack, TalkingHeadTrack


class FakeSession:
    """audio_for_frame(i): first 20 ms at +i/100, second 20 ms at -i/100 (so every chunk names its frame)."""

    def audio_for_frame(self, index: int) -> np.ndarray:
        level = np.float32(index / 100)
        return np.concatenate([np.full(CHUNK, level), np.full(CHUNK, -level)])


def _level(frame: object) -> int:
    """The chunk's constant sample value as a signed frame index (+i first half, -i second half)."""
    samples = frame.to_ndarray().reshape(-1)  # type: ignore[attr-defined]
    assert np.all(samples == samples[0])
    return round(samples[0] / 32767 * 100)


def _frame(index: int) -> LiveFrame:
    return LiveFrame(index, index / 25, np.full((16, 16, 3), index, np.uint8))


def test_video_pts_come_from_the_frame_index_and_the_speech_follows_the_video() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        outbox = FrameOutbox(loop, 8)
        clock = FrameClock()
        ends: list[EndOfFrames] = []
        video = TalkingHeadTrack(outbox, clock, ends.append)
        speech = SpeechTrack(FakeSession(), clock)  # type: ignore[arg-type]

        first = await speech.recv()  # before the first frame: silence, at sample 0
        assert _level(first) == 0 and first.pts == 0 and first.sample_rate == 16000

        outbox.put(_frame(7))
        frame = await video.recv()
        assert frame.pts == 7 * 3600 and frame.time_base == fractions.Fraction(1, 90000)
        assert frame.width == 16 and frame.to_ndarray(format="rgb24")[0, 0, 0] == 7
        assert [_level(await speech.recv()) for _ in range(2)] == [7, -7]

        # Frame 8 is not sent yet: the speech waits for it instead of running ahead.
        pending = asyncio.ensure_future(speech.recv())
        await asyncio.sleep(0.1)
        assert not pending.done()
        outbox.put(_frame(8))
        assert (await video.recv()).pts == 8 * 3600
        assert _level(await asyncio.wait_for(pending, 2)) == 8
        assert _level(await speech.recv()) == -8

        # The video jumped (frames dropped): the speech skips to the frame just sent.
        outbox.put(_frame(20))
        await video.recv()
        assert _level(await speech.recv()) == 20

        # pts count the samples sent, whatever was skipped.
        last = await speech.recv()
        assert _level(last) == -20 and last.pts == 6 * CHUNK

        outbox.put(EndOfFrames("end"))
        with pytest.raises(MediaStreamError):
            await video.recv()
        assert ends == [EndOfFrames("end")]
        assert _level(await asyncio.wait_for(speech.recv(), 2)) == 0  # after the end: silence, never a hang

    asyncio.run(scenario())


def _post(url: str, body: object) -> tuple[int, dict[str, object]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + "/api/offer", data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _offer_sdp() -> str:
    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="sendrecv")
        pc.addTransceiver("video", direction="recvonly")
        pc.createDataChannel("stats")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def test_offer_errors_are_json_and_free_the_admission(server) -> None:  # noqa: ANN001 - conftest's fixture
    portrait = server.state.store.list()[0]["id"]
    sdp = _offer_sdp()

    status, body = _post(server.url, b"not json")
    assert status == 400 and body["error"] == "bad_offer"
    status, body = _post(server.url, {"sdp": sdp, "type": "answer", "portrait": portrait})
    assert status == 400 and body["error"] == "bad_offer" and "offer" in body["message"]
    status, body = _post(server.url, {"sdp": sdp, "type": "offer", "portrait": "nope"})
    assert status == 400 and body["error"] == "no_portrait"
    offer = {"sdp": sdp, "type": "offer", "portrait": portrait}
    status, body = _post(server.url, {**offer, "options": ["model=x"]})
    assert status == 400 and body["error"] == "bad_options" and "per-session" in body["message"]

    taken = [server.state.admit() for _ in range(server.state.cfg.serve.max_sessions)]
    try:
        status, body = _post(server.url, {"sdp": sdp, "type": "offer", "portrait": portrait})
        assert status == 503 and body["error"] == "busy" and "max_sessions" in body["message"]
    finally:
        for sid in taken:
            server.state.release(sid)
    assert not server.state.sessions
