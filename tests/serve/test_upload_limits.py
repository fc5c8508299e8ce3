"""Portrait uploads against a real server: a header declaring too many pixels is refused before decoding, any
decoder failure is HTTP 400 with one line, and the server stays healthy."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from tests.helpers import png_bomb


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """20000x20000 of zeros (0.4 MB, 1.1 GB decoded), and a header claiming 60000x60000 (OpenCV's own
    limit: HTTP 500 before)."""
    return {"20000x20000": png_bomb(20000, 20000), "60000x60000": png_bomb(60000, 60000, b"\x78\x9c")}


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """cv2.imdecode fails the request (HTTP 500) if the server calls it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the upload was decoded")

    monkeypatch.setattr(cv2, "imdecode", refuse)


def post(server, body: bytes, kind: str = "image/png") -> tuple[int, dict]:
    request = urllib.request.Request(
        server.url + "/api/portraits", data=body, method="POST", headers={"Content-Type": kind}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def healthy(server) -> bool:
    with urllib.request.urlopen(server.url + "/api/health", timeout=10) as r:
        return r.status == 200 and json.load(r)["ok"] is True


def portrait_count(server) -> int:
    with urllib.request.urlopen(server.url + "/api/portraits", timeout=10) as r:
        return len(json.load(r))


def test_bombs_are_refused_before_decoding(server, bombs: dict[str, bytes], no_decoding: None) -> None:
    before = portrait_count(server)
    for size, body in bombs.items():
        status, reply = post(server, body)
        assert status == 400 and reply["error"] == "bad_image", reply
        assert (
            reply["message"].startswith(f"the upload is {size} pixels") and "downscale it" in reply["message"]
        )
        assert "\n" not in reply["message"]
    with ThreadPoolExecutor(4) as pool:  # four at once took 8.8 GB
        replies = list(pool.map(lambda _: post(server, bombs["20000x20000"]), range(4)))
    assert [status for status, _ in replies] == [400] * 4
    assert healthy(server) and portrait_count(server) == before


def test_decoder_failures_are_400_with_one_line(server, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, png = cv2.imencode(".png", skdata.astronaut())
    cases = {
        b"\x89PNG\r\n\x1a\n" + bytes(40): "the upload: its PNG header is corrupt or truncated",
        png.tobytes()[:20]: "the upload: its PNG header is corrupt or truncated",
        png_bomb(64, 64, b"garbage"): "the upload: the file is corrupt or truncated",
        b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(8): "the upload: its WebP header is corrupt or truncated",
        b"GIF89a" + bytes(20): "the upload is not an image in a format read here (PNG, JPEG, WebP, BMP)",
    }
    for body, expected in cases.items():
        status, reply = post(server, body)
        assert status == 400 and expected in reply["message"] and "\n" not in reply["message"], reply

    def broken(*args: object) -> None:
        raise cv2.error("simulated\ndecoder failure")

    monkeypatch.setattr(cv2, "imdecode", broken)
    status, reply = post(server, png.tobytes())
    assert status == 400 and "OpenCV refused it" in reply["message"] and "\n" not in reply["message"], reply
    assert healthy(server)


@pytest.mark.parametrize(("ext", "params"), [(".jpg", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90])])
def test_a_normal_portrait_is_still_accepted(server, ext: str, params: list[int]) -> None:
    face = np.ascontiguousarray(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    ok, encoded = cv2.imencode(ext, face, params)
    status, reply = post(server, encoded.tobytes(), f"image/{ext.strip('.').replace('jpg', 'jpeg')}")
    assert status == 200 and (reply["width"], reply["height"]) == (512, 512), reply
