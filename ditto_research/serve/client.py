"""Stream a speech file to a live server over its WebSocket API and save what comes back as an MP4.

    python -m ditto_research.serve.client --url ws://127.0.0.1:8000/ws --source face.png --audio speech.wav \\
        --output out.mp4 [--realtime] [--token T] [--option control.emo=3 ...] [--chunk-ms 20]

``--source`` is uploaded (``POST /api/portraits``); ``--portrait ID`` uses one the server already has. The
audio (any format ffmpeg reads) is sent as PCM16 at 16 kHz: at the wall-clock pace in ``--chunk-ms`` pieces
with ``--realtime`` (as a microphone would), else as fast as the socket takes it. Frames are written in index
order; a missing index (a frame the server dropped for a slow client) repeats the previous image, so the
video stays in sync with the speech, and is counted as dropped.

Numbers (client-measured, beside the server's own from its final ``done`` message):

- first-frame latency: arrival of the first frame minus the time the first audio was sent;
- lag of frame ``i``: its arrival minus the time the audio that drives it (samples up to ``(i + 1) * 640``)
  had been sent; p50 / p95 over the frames driven by the client's audio;
- fps: frames over the time between the first and the last arrival.

The Python API (the benchmark's): :func:`stream_file` (a plain function) or :func:`stream` (a coroutine, for
several concurrent sessions in one event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import mimetypes
import os
import queue
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ditto_research.constants import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ditto_research.errors import DittoError, InputError
from ditto_research.serve import protocol

__all__ = ["ClientError", "ClientResult", "main", "stream", "stream_file", "upload_portrait"]

MAX_FRAME_BYTES = 16 * 2**20  # a JPEG frame of a large portrait still fits
SINK_QUEUE = 64  # frames waiting for the decoder / encoder thread


class ClientError(DittoError):
    """The server refused or ended the session, or cannot be reached: ``code`` is the protocol error code or
    the WebSocket close code when there is one."""

    def __init__(self, message: str, code: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ClientResult:
    """One streamed session: client-measured numbers beside the server's (``server_*``, from ``done``)."""

    output: Path | None
    frames: int  # frames received
    dropped: int  # indices that never arrived (the server dropped them for a slow client)
    first_frame_ms: float | None
    lag_p50_ms: float | None
    lag_p95_ms: float | None
    fps: float
    audio_s: float  # the client's audio
    reason: str  # the server's "done" reason
    server_frames: int | None
    server_first_frame_ms: float | None
    server_lag_p50_ms: float | None
    server_lag_p95_ms: float | None
    server_fps: float | None
    server_dropped: int | None
    lags_ms: tuple[float, ...] = field(default=(), repr=False)  # the client-measured lag of every frame

    def summary(self) -> str:
        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.0f} ms"

        lines = [
            f"frames: {self.frames} ({self.dropped} dropped; server: {self.server_frames} rendered, "
            f"{self.server_dropped} dropped), {self.audio_s:.2f} s of audio, ended by {self.reason!r}",
            f"first frame: {ms(self.first_frame_ms)} after the first audio "
            f"(server: {ms(self.server_first_frame_ms)})",
            f"lag p50 / p95: {ms(self.lag_p50_ms)} / {ms(self.lag_p95_ms)} "
            f"(server: {ms(self.server_lag_p50_ms)} / {ms(self.server_lag_p95_ms)})",
            f"fps: {self.fps:.1f} (server: {self.server_fps})",
        ]
        if self.output is not None:
            lines.append(f"wrote {self.output}")
        return "\n".join(lines)


# ---- HTTP side ---------------------------------------------------------------------------------------------


def http_base(url: str) -> str:
    """``http(s)://host:port[/prefix]`` of a ``ws(s)://host:port[/prefix]/ws`` URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise InputError(f"--url {url!r} is not a WebSocket URL; give ws://HOST:PORT/ws")
    path = parts.path[: -len("/ws")] if parts.path.endswith("/ws") else parts.path.rstrip("/")
    return f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}{path}"


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def image_content_type(path: Path) -> str:
    """The image/* type of ``path`` by its extension (the server refuses uploads of other types; it checks the
    bytes themselves anyway), ``image/unknown`` when the extension says nothing."""
    kind = mimetypes.guess_type(path.name)[0]
    return kind if kind is not None and kind.startswith("image/") else "image/unknown"


def upload_portrait(url: str, source: str | Path, token: str | None = None, timeout_s: float = 120.0) -> str:
    """Upload an image file as a portrait (``POST /api/portraits``); its id (ClientError if refused)."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"source image not found: {path}; give a portrait image (PNG, JPEG, WebP, BMP)")
    target = http_base(url) + "/api/portraits"
    headers = {**_headers(token), "X-Filename": path.name, "Content-Type": image_content_type(path)}
    request = urllib.request.Request(target, data=path.read_bytes(), headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is addressed directly
    try:
        with opener.open(request, timeout=timeout_s) as response:
            return str(json.load(response)["id"])
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read().decode("utf-8", "replace")).get("message", e.reason)
        except ValueError:
            message = e.reason
        raise ClientError(
            f"the server refused the portrait {path.name} (HTTP {e.code}): {message}", e.code
        ) from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ClientError(f"cannot reach the server at {target}: {reason}; is it running?") from e


# ---- frames -> MP4 -----------------------------------------------------------------------------------------


class _FrameSink:
    """Decodes and writes frames on its own thread, in index order, filling gaps with the previous image."""

    def __init__(self, output: Path | None, overwrite: bool) -> None:
        from ditto_research.media.writer import VideoWriter

        self.writer = VideoWriter(output, fps=FPS, overwrite=overwrite) if output is not None else None
        self.next_index = 0
        self.dropped = 0
        self._last: np.ndarray | None = None
        self._queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue(SINK_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="client-sink", daemon=True)
        self._thread.start()

    async def put(self, index: int, jpeg: bytes) -> None:
        try:
            self._queue.put_nowait((index, jpeg))
        except queue.Full:  # the encoder is behind: wait for it off the event loop
            await asyncio.to_thread(self._queue.put, (index, jpeg))

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                self._write(*item)
        except BaseException as e:  # noqa: BLE001 - re-raised by finish()
            self._error = e
            while self._queue.get() is not None:  # keep draining so put() never blocks
                pass

    def _write(self, index: int, jpeg: bytes) -> None:
        if index < self.next_index:  # a duplicate or a late frame: the slot was already filled
            return
        image = None
        if self.writer is not None:
            bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ClientError(f"frame {index} from the server is not a decodable JPEG")
            image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        self._fill(index, image if self._last is None else self._last)
        self._emit(image)

    def _fill(self, until: int, image: np.ndarray | None) -> None:
        """Count (and, when writing, repeat ``image`` over) the missing indices before ``until``."""
        while self.next_index < until:
            self._emit(image)
            self.dropped += 1

    def _emit(self, image: np.ndarray | None) -> None:
        if self.writer is not None and image is not None:
            self.writer.write(image)
        self._last = image
        self.next_index += 1

    def finish(self, total: int | None, audio_path: Path | None) -> Path | None:
        """Pad the trailing gap up to the server's ``total`` frames, then publish the MP4 (or abort)."""
        self._queue.put(None)
        self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            if total is not None:
                self._fill(total, self._last)
            return self.writer.close(audio_path) if self.writer is not None else None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self.writer is not None:
            self.writer.abort()


# ---- the session -------------------------------------------------------------------------------------------


def to_pcm16(samples: np.ndarray) -> bytes:
    """(n,) float in [-1, 1] -> little-endian PCM16 bytes (clipped)."""
    return (np.clip(np.asarray(samples, np.float64), -1.0, 1.0) * 32767).round().astype("<i2").tobytes()


def _closed_error(e: BaseException, started: bool) -> ClientError:
    """A ClientError for a connection the server closed without "done"."""
    frame = getattr(e, "rcvd", None)
    what = "the server ended the session" if started else "server refused the session"
    if frame is None:  # no close frame: the server dropped the connection
        return ClientError(
            f"{what} (1006): the connection dropped without a close code; see the server's log", 1006
        )
    return ClientError(f"{what} ({frame.code}): {frame.reason or 'no reason given'}", frame.code)


async def _send_audio(
    ws: object, samples: np.ndarray, chunk: int, realtime: bool, sent: list[tuple[int, float]]
) -> None:
    """Send the audio in ``chunk``-sample pieces (paced at 1x with ``realtime``), then "end"; ``sent`` gets
    (samples sent so far, time) after each piece."""
    from websockets.exceptions import ConnectionClosed

    t0 = time.perf_counter()
    with contextlib.suppress(ConnectionClosed):  # the receiver reports why the server closed
        for k, begin in enumerate(range(0, samples.shape[0], chunk)):
            if realtime:
                delay = t0 + k * chunk / SAMPLE_RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            piece = samples[begin : begin + chunk]
            await ws.send(to_pcm16(piece))  # type: ignore[attr-defined]
            sent.append((begin + piece.shape[0], time.perf_counter()))
        await ws.send(json.dumps({"type": "end"}))  # type: ignore[attr-defined]


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def _client_numbers(
    arrivals: dict[int, float], sent: list[tuple[int, float]], total: int
) -> dict[str, object]:
    """First-frame latency, lag p50 / p95 and fps from frame arrivals and the audio send times."""
    if not arrivals or not sent:
        return {"first_frame_ms": None, "lag_p50_ms": None, "lag_p95_ms": None, "fps": 0.0, "lags_ms": ()}
    counts = np.array([c for c, _ in sent])
    times = np.array([t for _, t in sent])
    lags = []
    for index, arrived in arrivals.items():
        needed = min((index + 1) * SAMPLES_PER_FRAME, total)
        if index * SAMPLES_PER_FRAME >= total:  # driven by the server's idle silence, not by our audio
            continue
        piece = int(np.searchsorted(counts, needed))  # the first piece that completes the frame's audio
        if piece < len(times):
            lags.append(1000.0 * (arrived - times[piece]))
    first, last = min(arrivals.values()), max(arrivals.values())
    fps = (len(arrivals) - 1) / (last - first) if len(arrivals) > 1 and last > first else 0.0
    return {
        "first_frame_ms": round(1000.0 * (first - times[0]), 1),
        "lag_p50_ms": _percentile(lags, 50),
        "lag_p95_ms": _percentile(lags, 95),
        "fps": round(fps, 2),
        "lags_ms": tuple(round(lag, 1) for lag in lags),
    }


async def stream(
    url: str,
    audio: str | Path | np.ndarray,
    portrait_id: str | None = None,
    source: str | Path | None = None,
    output: str | Path | None = None,
    realtime: bool = False,
    token: str | None = None,
    options: list[str] | tuple[str, ...] = (),
    chunk_ms: float = 20.0,
    overwrite: bool = False,
    timeout_s: float = 60.0,
) -> ClientResult:
    """Stream ``audio`` (a file, or (n,) float32 at 16 kHz) to the server at ``url`` and collect the frames.

    Args:
        portrait_id / source: a portrait the server has, or an image file to upload (exactly one).
        output: the MP4 to write (frames + the audio); None keeps only the numbers.
        realtime: send at 1x wall-clock pace in ``chunk_ms`` pieces, else as fast as the socket takes it.
        options: per-session overrides (``control.emo=3``, ``sampler=euler`` ...).
        timeout_s: the longest wait for any message from the server.

    Raises:
        InputError: a missing or unreadable local file, or a bad argument.
        ClientError: the server cannot be reached, refused the session or ended it with an error.
    """
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

    from ditto_research.audio.io import load_audio, write_wav

    if (portrait_id is None) == (source is None):
        raise InputError("give exactly one of a portrait id (--portrait) and a source image (--source)")
    if not 1 <= chunk_ms <= 1000:
        raise InputError(f"chunk_ms={chunk_ms} is out of range; give 1 .. 1000 ms")
    http_base(url)  # a bad URL fails before anything is read or sent
    if isinstance(audio, np.ndarray):
        samples, audio_path = np.asarray(audio, np.float32).reshape(-1), None
    else:
        samples, audio_path = await asyncio.to_thread(load_audio, audio), Path(audio).expanduser()
    if samples.size == 0:
        raise InputError("the audio has no samples")
    if source is not None:
        portrait_id = await asyncio.to_thread(upload_portrait, url, source, token, timeout_s)
    chunk = max(1, round(chunk_ms * SAMPLE_RATE / 1000))

    sink = _FrameSink(Path(output) if output is not None else None, overwrite)
    sent: list[tuple[int, float]] = []
    arrivals: dict[int, float] = {}
    done: dict[str, object] | None = None
    sender: asyncio.Task | None = None
    try:
        try:
            ws_cm = connect(
                url,
                additional_headers=_headers(token),
                max_size=MAX_FRAME_BYTES,
                compression=None,
                proxy=None,
                open_timeout=timeout_s,
            )
            ws = await ws_cm
        except InvalidURI as e:
            raise InputError(f"--url {url!r} is not a WebSocket URL; give ws://HOST:PORT/ws") from e
        except InvalidHandshake as e:
            raise ClientError(f"the server at {url} refused the WebSocket handshake: {e}") from e
        except ConnectionRefusedError as e:
            raise ClientError(
                f"cannot connect to {url}: connection refused; is the server running there?"
            ) from e
        except (OSError, TimeoutError) as e:
            reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
            raise ClientError(f"cannot connect to {url}: {reason}; is the server running there?") from e
        async with ws:
            started = False
            try:
                await ws.send(
                    json.dumps(
                        {
                            "type": "start",
                            "portrait": portrait_id,
                            "sample_rate": SAMPLE_RATE,
                            "format": "pcm16",
                            "options": list(options),
                            "idle": False,  # a file: frames match its audio, no silence inserted
                        }
                    )
                )
                while True:
                    message = await asyncio.wait_for(ws.recv(), timeout_s)
                    if isinstance(message, bytes):
                        index, _, jpeg = protocol.decode_frame(message)
                        arrivals.setdefault(index, time.perf_counter())
                        await sink.put(index, jpeg)
                        continue
                    reply = json.loads(message)
                    kind = reply.get("type")
                    if kind == "ready":
                        started = True
                        sender = asyncio.create_task(_send_audio(ws, samples, chunk, realtime, sent))
                    elif kind == "done":
                        done = reply
                        break
                    elif kind == "error":
                        what = "the session failed" if started else "server refused the session"
                        raise ClientError(
                            f"{what} ({reply.get('code')}): {reply.get('message')}", reply.get("code")
                        )
            except ConnectionClosed as e:
                raise _closed_error(e, started) from e
            except TimeoutError as e:
                raise ClientError(
                    f"no message from the server at {url} for {timeout_s:g} s; giving up"
                ) from e
        if sender is not None:
            await sender
        server_frames = done.get("frames") if done is not None else None
        with tempfile.TemporaryDirectory(prefix="ditto-client-") as folder:
            if output is not None and audio_path is None:
                audio_path = write_wav(Path(folder) / "speech.wav", samples)
            written = await asyncio.to_thread(sink.finish, server_frames, audio_path if output else None)
    except BaseException:
        if sender is not None:
            sender.cancel()
        sink.abort()
        raise
    numbers = _client_numbers(arrivals, sent, samples.shape[0])
    assert done is not None
    return ClientResult(
        output=written,
        frames=len(arrivals),
        dropped=sink.dropped,
        audio_s=samples.shape[0] / SAMPLE_RATE,
        reason=str(done.get("reason")),
        server_frames=server_frames,
        server_first_frame_ms=done.get("first_frame_ms"),
        server_lag_p50_ms=done.get("lag_p50_ms"),
        server_lag_p95_ms=done.get("lag_p95_ms"),
        server_fps=done.get("fps"),
        server_dropped=done.get("dropped"),
        **numbers,  # type: ignore[arg-type]
    )


def stream_file(
    url: str,
    audio: str | Path | np.ndarray,
    portrait_id: str | None = None,
    source: str | Path | None = None,
    output: str | Path | None = None,
    realtime: bool = False,
    token: str | None = None,
    options: list[str] | tuple[str, ...] = (),
    **kwargs: object,
) -> ClientResult:
    """:func:`stream` as a plain function (its own event loop)."""
    return asyncio.run(stream(url, audio, portrait_id, source, output, realtime, token, options, **kwargs))


# ---- CLI ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ditto_research.serve.client",
        description="Stream a speech file to a live ditto-research server (WebSocket) and save the video.",
    )
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws", help="the server's WebSocket URL")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--source", help="a portrait image to upload")
    who.add_argument("--portrait", help="the id of a portrait the server has (GET /api/portraits)")
    parser.add_argument("--audio", required=True, help="the speech (any format ffmpeg reads)")
    parser.add_argument("--output", help="the MP4 to write (frames + the audio); omit to only measure")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument(
        "--realtime", action="store_true", help="send at 1x wall-clock pace (as a microphone)"
    )
    parser.add_argument("--chunk-ms", type=float, default=20.0, help="audio per message with --realtime (ms)")
    parser.add_argument(
        "--token",
        default=os.environ.get("DITTO_SERVE_TOKEN"),
        help="the server's serve.token (default: $DITTO_SERVE_TOKEN)",
    )
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a per-session override, e.g. control.emo=3 (repeatable)",
    )
    parser.add_argument("--timeout-s", type=float, default=60.0, help="longest wait for a server message")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.output and Path(args.output).expanduser().exists() and not args.overwrite:
            raise InputError(f"output {args.output} already exists; pass --overwrite or choose another path")
        result = stream_file(
            args.url,
            args.audio,
            args.portrait,
            args.source,
            args.output,
            args.realtime,
            args.token,
            args.option,
            chunk_ms=args.chunk_ms,
            overwrite=args.overwrite,
            timeout_s=args.timeout_s,
        )
    except DittoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    if args.json:
        numbers = {k: v for k, v in asdict(result).items() if k != "lags_ms"}
        print(json.dumps({**numbers, "output": str(result.output) if result.output else None}))
    else:
        print(result.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
