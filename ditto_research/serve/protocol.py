"""The WebSocket protocol at ``/ws``, message by message (the table in docs/serve.md is written from this).

Client -> server
    text   {"type": "start", "portrait": ID, "sample_rate": 16000, "format": "pcm16",
            "options": [OVERRIDE, ...], "idle": true}
           idle=false: never insert silence (a file being streamed: frames match its audio exactly)
    binary audio: PCM16 little-endian mono at 16 kHz, any number of whole samples per message
    text   {"type": "end"}       end of audio: the rest is rendered, then "done"
    text   {"type": "cancel"}    stop now: "done" with reason "cancel"
    text   {"type": "ping"}      answered with {"type": "pong"}

Server -> client
    text   {"type": "ready", "session": ID, "fps": 25, "sample_rate": 16000, "width": W, "height": H}
    binary a frame: FRAME_HEADER (magic b"DTF1", uint32 index, float64 timestamp_s; little-endian) + JPEG
    text   {"type": "stats", "frames", "first_frame_ms", "lag_ms", "lag_p50_ms", "lag_p95_ms", "fps",
            "dropped", "audio_s", "skipped_s", "pipeline_ms"}
    text   {"type": "done", "reason": "end"|"cancel"|"idle"|"max_length", + the stats}
    text   {"type": "error", "code": CODE, "message": SENTENCE}   (then the connection closes)

Close codes: 1000 after "done"; 1008 a missing or wrong token, or a refused Origin / Host; 1009 a message
over serve.max_message_kb; 1013 the server is at serve.max_sessions; 1003 after a protocol error (the "error"
message says which); 1011 a failure inside the session (also reported as an "error" message).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from ditto_research.constants import SAMPLE_RATE

__all__ = [
    "ERROR_CODES",
    "FRAME_HEADER",
    "FRAME_MAGIC",
    "ProtocolError",
    "StartMessage",
    "decode_frame",
    "encode_frame",
    "error_message",
    "parse_control",
]

FRAME_MAGIC = b"DTF1"
FRAME_HEADER = struct.Struct("<4sId")

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_BUSY = 1013

ERROR_CODES = {
    "bad_json": "a text message that is not a JSON object",
    "bad_message": "an unknown message type or a missing / mistyped field",
    "bad_audio": "binary audio that is not whole PCM16 samples, or NaN / infinite samples",
    "bad_format": "a sample rate other than 16000 or a format other than pcm16",
    "bad_options": "per-session options that fail config validation (the CLI's message)",
    "no_session": "audio, end or cancel before start",
    "already_started": "a second start on the same connection",
    "no_portrait": "a portrait id the server does not have",
    "no_face": "a portrait the face front-end cannot use",
    "session_failed": "a stage failed inside the session (the server goes on)",
    "server_error": "the server failed on a message (a bug of ours, logged; the server goes on)",
}


class ProtocolError(Exception):
    """A client broke the protocol: ``code`` (see :data:`ERROR_CODES`) and a sentence for the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class StartMessage:
    portrait: str
    options: tuple[str, ...] = ()
    idle: bool = True


def error_message(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


def parse_control(text: str) -> dict[str, Any]:
    """A text message as a JSON object with a known ``type`` (ProtocolError otherwise)."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProtocolError("bad_json", f"a text message must be a JSON object: {e.msg} at {e.pos}") from e
    except RecursionError as e:  # e.g. 100 000 nested "[": deeper than any message of this protocol
        raise ProtocolError("bad_json", "a text message is nested too deeply; send a flat JSON object") from e
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("bad_json", 'a text message must be a JSON object with a "type" field')
    if message["type"] not in ("start", "end", "cancel", "ping"):
        raise ProtocolError(
            "bad_message", f"unknown message type {message['type']!r}; use start, end, cancel, ping"
        )
    return message


def parse_start(message: dict[str, Any]) -> StartMessage:
    """Validate a start message (ProtocolError with a sentence naming the field)."""
    portrait = message.get("portrait")
    if not isinstance(portrait, str) or not portrait:
        raise ProtocolError(
            "bad_message", 'start needs "portrait": the id of a portrait (GET /api/portraits)'
        )
    rate = message.get("sample_rate", SAMPLE_RATE)
    if rate != SAMPLE_RATE:
        raise ProtocolError(
            "bad_format",
            f"sample_rate={rate!r}: this server takes {SAMPLE_RATE} Hz audio; resample before sending",
        )
    fmt = message.get("format", "pcm16")
    if fmt != "pcm16":
        raise ProtocolError("bad_format", f"format={fmt!r}: send PCM16 little-endian mono (format pcm16)")
    options = message.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ProtocolError(
            "bad_message", 'start "options" must be a list of overrides such as "control.emo=3"'
        )
    idle = message.get("idle", True)
    if not isinstance(idle, bool):
        raise ProtocolError(
            "bad_message", 'start "idle" must be true (live: silence fills the gaps) or false'
        )
    return StartMessage(portrait, tuple(options), idle)


def encode_frame(index: int, timestamp_s: float, jpeg: bytes) -> bytes:
    return FRAME_HEADER.pack(FRAME_MAGIC, index, timestamp_s) + jpeg


def decode_frame(data: bytes) -> tuple[int, float, bytes]:
    """(index, timestamp_s, jpeg) of a binary frame message (ValueError if it is not one)."""
    if len(data) < FRAME_HEADER.size or data[:4] != FRAME_MAGIC:
        raise ValueError("not a frame message (no DTF1 header)")
    _, index, timestamp = FRAME_HEADER.unpack_from(data)
    return index, timestamp, data[FRAME_HEADER.size :]
