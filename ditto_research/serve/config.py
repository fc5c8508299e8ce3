"""Structured config of ``python -m ditto_research.serve`` (``conf/serve.yaml``), registered in Hydra's
ConfigStore.

The root extends :class:`~ditto_research.config.PipelineConfig` (the groups ``infer`` has; one engine built
from it serves every session) with ``serve``: where to listen, how many sessions, limits and idle behaviour.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from ditto_research.config import PipelineConfig, register_configs
from ditto_research.errors import ConfigError

__all__ = ["ServeConfig", "ServeSettings", "is_loopback", "register_serve_configs"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}={value} is out of range; it must be {bound}")


@dataclass
class ServeSettings:
    """The live server (group-less ``serve:`` block of conf/serve.yaml)."""

    # Address to bind. Loopback by default; any other address requires `token`.
    host: str = "127.0.0.1"
    # TCP port (0 = a free port, printed at start-up).
    port: int = 8000
    # Shared secret: clients send `Authorization: Bearer TOKEN` or `?token=TOKEN` (the page forwards its own
    # `?token=`). Required when `host` is not a loopback address; null = no authentication (loopback only).
    token: str | None = None
    # Concurrent sessions; one more is refused (HTTP 503 / WebSocket close 1013) and the others go on.
    max_sessions: int = 4
    # End a session after this many seconds without audio from its client (0 = never). Until then the avatar
    # idles: silence is fed at the audio rate, so the video never freezes.
    idle_timeout_s: float = 60.0
    # Silence fills in once the client's audio is this late (s): jitter smaller than this is not padded.
    idle_fill_delay_s: float = 0.2
    # Longest session (s, 0 = no limit).
    max_session_s: float = 900.0
    # A client may send audio at most this far ahead of the rendered frames (s); beyond it the server stops
    # reading its socket until the frames catch up (TCP slows the client down), so audio never piles up.
    max_audio_ahead_s: float = 20.0
    # Audio a WebSocket client sends beyond `max_audio_ahead_s` is read and held in memory (s; 64 KB per
    # second) until the frames catch up, so a cancel, end or ping sent after it is seen at once; only beyond
    # this much held audio does the server stop reading the socket (then closing it still stops at once).
    max_held_audio_s: float = 60.0
    # Largest portrait upload (MB); it is decoded and validated as an image before use.
    max_upload_mb: float = 16.0
    # Largest WebSocket message (KiB): a bigger one closes the connection with code 1009.
    max_message_kb: int = 512
    # Frames waiting for a slow client; beyond this the oldest is dropped (and counted), memory never grows.
    frame_queue: int = 8
    # JPEG quality of the frames sent over the WebSocket.
    jpeg_quality: int = 85
    # Seconds between two `stats` messages to a WebSocket client.
    stats_interval_s: float = 1.0
    # Portraits offered to every client (image paths; empty = the bundled example portrait).
    portraits: list[str] = field(default_factory=list)
    # Other origins (scheme://host[:port]) whose pages may use the API: allowed by CORS and by the Origin
    # check of the WebSocket and the state-changing routes (empty = same origin only). Requests without an
    # Origin header (programs, not browsers) are not affected.
    cors_origins: list[str] = field(default_factory=list)
    # Host names (the request's Host header, port excluded) accepted besides loopback names when the server
    # has no token: a web page cannot reach a token-less server through a DNS name it controls (DNS
    # rebinding). E.g. [my-box.local]. With a token every Host is accepted (the token is the check).
    allowed_hosts: list[str] = field(default_factory=list)
    # A live session (a microphone: idle=true) never falls further than this behind its audio (s): when
    # rendering is slower than real time, the oldest audio not yet rendered is skipped (counted as
    # `skipped_s` in stats) so the lag comes back under the limit. File clients (idle=false) are exempt.
    # 0 = never skip.
    max_lag_s: float = 3.0
    # Highest `sampler.steps` a client may ask for in its session options (cost per session is bounded).
    max_sampler_steps: int = 50
    # Uploaded portraits kept (count and MB of their PNGs on disk); beyond either, the least recently used
    # upload is forgotten (files and registration). The server's own portraits are always kept.
    max_portraits: int = 32
    max_portrait_mb: float = 256.0
    # uvicorn's log level.
    log_level: str = "warning"

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"serve.port={self.port} is not a TCP port; give 0 (a free port) .. 65535")
        _positive("serve.max_sessions", self.max_sessions)
        _positive("serve.idle_timeout_s", self.idle_timeout_s, allow_zero=True)
        _positive("serve.idle_fill_delay_s", self.idle_fill_delay_s, allow_zero=True)
        _positive("serve.max_session_s", self.max_session_s, allow_zero=True)
        _positive("serve.max_audio_ahead_s", self.max_audio_ahead_s)
        _positive("serve.max_held_audio_s", self.max_held_audio_s)
        _positive("serve.max_upload_mb", self.max_upload_mb)
        _positive("serve.max_message_kb", self.max_message_kb)
        _positive("serve.frame_queue", self.frame_queue)
        _positive("serve.stats_interval_s", self.stats_interval_s)
        _positive("serve.max_lag_s", self.max_lag_s, allow_zero=True)
        _positive("serve.max_sampler_steps", self.max_sampler_steps)
        _positive("serve.max_portraits", self.max_portraits)
        _positive("serve.max_portrait_mb", self.max_portrait_mb)
        if self.max_sampler_steps > 1000:
            raise ConfigError(f"serve.max_sampler_steps={self.max_sampler_steps} must be <= 1000")
        for origin in self.cors_origins:
            if not str(origin).startswith(("http://", "https://")) or str(origin).endswith("/"):
                raise ConfigError(
                    f"serve.cors_origins: {origin!r} is not an origin; give scheme://host[:port], e.g. "
                    "http://localhost:3000 (no path, no trailing slash)"
                )
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"serve.jpeg_quality={self.jpeg_quality} must lie in [1, 100]")
        if self.token is not None and not str(self.token).strip():
            raise ConfigError("serve.token is empty; give a secret or leave it null (loopback only)")


@dataclass
class ServeConfig(PipelineConfig):
    """Root of ``python -m ditto_research.serve``: the pipeline (the server streams it; mode is kept as
    composed) plus the server's settings."""

    progress: bool = False  # a server logs; no progress bars
    serve: ServeSettings = field(default_factory=ServeSettings)


def register_serve_configs() -> None:
    """The infer group schemas plus ``base_serve`` (the root conf/serve.yaml extends)."""
    register_configs()
    ConfigStore.instance().store(name="base_serve", node=ServeConfig)
