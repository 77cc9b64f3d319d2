"""CORS for player pages on other origins, as verdicts (the shell adds the headers).

A service's website embeds the player while the playback API lives on another origin: the browser then
fetches manifests, playlists, steering manifests, the catalog and posts events cross-origin, and asks
first (a preflight OPTIONS) for the POST with a JSON body. Only the player-facing routes answer CORS;
the control plane's (GET /v1/demand, /metrics) do not. Credentials are never allowed: nothing here
uses cookies, and the signed URLs are bearer capabilities that need none.
"""
from __future__ import annotations

from typing import Mapping, Sequence

PLAYER_ROUTES = ("/v1/titles", "/v1/playback/", "/v1/events", "/v1/fleet", "/v1/popularity")
METHODS = "GET, HEAD, POST, OPTIONS"
ALLOW_HEADERS = "Content-Type, X-Request-Id"
EXPOSE_HEADERS = "X-Request-Id"
MAX_AGE_S = 600


def player_route(path: str) -> bool:
    return path.startswith(PLAYER_ROUTES)


def allowed_origin(origin: str | None, allowed: Sequence[str]) -> str | None:
    """The Access-Control-Allow-Origin value for a request from `origin`, or None (no CORS)."""
    if not origin or not allowed:
        return None
    if tuple(allowed) == ("*",):
        return "*"
    return origin if origin in allowed else None


def response_headers(origin: str | None, allowed: Sequence[str]) -> dict[str, str]:
    """Headers for an actual (non-preflight) response."""
    value = allowed_origin(origin, allowed)
    if value is None:
        return {}
    out = {"Access-Control-Allow-Origin": value, "Access-Control-Expose-Headers": EXPOSE_HEADERS}
    if value != "*":
        out["Vary"] = "Origin"
    return out


def preflight(origin: str | None, method: str | None, allowed: Sequence[str]) -> tuple[int, Mapping[str, str]]:
    """(status, headers) for an OPTIONS preflight: 204 with the grants, or 403 for an origin or
    method not allowed (the browser then refuses the real request)."""
    value = allowed_origin(origin, allowed)
    if value is None or method not in ("GET", "HEAD", "POST"):
        return 403, {"Vary": "Origin"}
    return 204, {**response_headers(origin, allowed), "Access-Control-Allow-Methods": METHODS,
                 "Access-Control-Allow-Headers": ALLOW_HEADERS, "Access-Control-Max-Age": str(MAX_AGE_S)}
