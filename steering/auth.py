"""Who may call which steering endpoint. Every route that mints URLs, reads the fleet or a manifest
names its caller first (contracts.callers): a bearer token from the callers file, with its roles, or
an appliance's own request signature. Anonymous or unknown → 401, known but not allowed → 403, both
before any body is read. /v1/heartbeat authenticates by its own signature; /healthz and /metrics stay
open for load balancers and Prometheus (counts only, no URLs, keys or fleet layout).
"""
from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable

from aiohttp import web

from contracts.callers import APPLIANCE_ROLE, Caller, Forbidden, authenticate

Handler = Callable[[web.Request], Awaitable[web.Response]]
AUTHENTICATE = web.AppKey("authenticate", Callable[[web.Request], Caller])
CALLER = web.RequestKey("caller", Caller)  # the authenticated caller, for handlers that need it


def authenticator(replica: Any) -> Callable[[web.Request], Caller]:
    """What the app installs under AUTHENTICATE: the caller of a request, by the replica's current
    callers file and keys (both follow reloads)."""
    def caller_of(request: web.Request) -> Caller:
        loaded = replica.loaded
        return authenticate(request.headers.get("Authorization"), request.method, request.raw_path, replica.wall(),
                            loaded.callers, loaded.appliance_keys)
    return caller_of


def requires(role: str, *, own_appliance: str | None = None) -> Callable[[Handler], Handler]:
    """The handler runs only for a caller with `role`; with `own_appliance` (a query parameter), an
    appliance may also call it for its own id."""
    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.Response:
            caller = request.app[AUTHENTICATE](request)
            if own_appliance is not None and APPLIANCE_ROLE in caller.roles:
                if caller.appliance != request.query.get(own_appliance):
                    raise Forbidden(f"{caller.name} may read its own {own_appliance} only")
            else:
                caller.require(role)
            request[CALLER] = caller
            return await handler(request)
        return wrapped
    return wrap
