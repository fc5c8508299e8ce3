"""Who may use the live server: the token, and the Host and Origin checks (see docs/serve.md, Security)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from ditto_research.serve.config import is_loopback
from ditto_research.serve.state import ServerState

__all__ = ["refusal", "token_ok"]


def token_ok(state: ServerState, header: str | None, query: str | None) -> bool:
    token = state.cfg.serve.token
    if token is None:
        return True
    given = query or (header[7:] if header and header.lower().startswith("bearer ") else None)
    return given is not None and secrets.compare_digest(str(given), str(token))


def _host_name(host_header: str) -> str:
    """The host of a Host header, without the port (``[::1]:8000`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


def refusal(state: ServerState, headers: Mapping[str, str], changes_state: bool) -> str | None:
    """Why a request may not proceed (a sentence), or None.

    - Without a token (a loopback server), the Host header must name this machine (a loopback name or
      ``serve.allowed_hosts``): a page on another site cannot reach the server through a DNS name it
      controls and re-points to 127.0.0.1 (DNS rebinding).
    - The WebSocket and the state-changing routes need the request's Origin, when it has one (browsers always
      send it there; programs usually do not), to be this server's own origin or one of
      ``serve.cors_origins``: any page open in the user's browser could otherwise drive the server.
    """
    settings = state.cfg.serve
    host = headers.get("host", "")
    if settings.token is None:
        name = _host_name(host).lower()
        if not (is_loopback(name) or name in {h.lower() for h in settings.allowed_hosts}):
            return (
                f"Host {host[:60]!r} is not this machine's name (serve.allowed_hosts lists others); open "
                "the server as http://127.0.0.1:PORT/"
            )
    origin = headers.get("origin")
    if changes_state and origin is not None:
        own = {f"http://{host}", f"https://{host}"}
        if origin not in own and origin not in set(settings.cors_origins):
            return (
                f"origin {origin[:60]!r} not allowed (serve.cors_origins lists others); use the server's "
                "own page"
            )
    return None
