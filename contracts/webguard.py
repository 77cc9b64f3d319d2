"""Shedding abuse in the aiohttp services (steering, playback, `origin serve`) as the appliance's own
server does (ARCHITECTURE §5): header and idle timeouts, a connection cap, per-route body limits checked
before the body is read, bounded JSON. Refusals are small exceptions carrying `status_hint` and `reason`
(each service's `refusals` wrapper answers them as JSON 4xx); a timed-out connection is closed.

Connections. aiohttp has an idle timeout (`keepalive_timeout`, armed at connect and after each
response) but no header timeout — a head trickled in byte by byte keeps its connection for the whole
keep-alive timeout, 3630 s by default — and no connection cap. `GuardedRunner` is an AppRunner whose
protocol instances are `GuardedHandler`s: aiohttp's RequestHandler plus one deadline, as the appliance's
connections carry one:

    connect                       deadline = now + header_timeout_s (the first head must arrive)
    a head is complete            no deadline (its handler runs; `read_body` bounds the body)
    response sent, idle           aiohttp's keep-alive timer closes it after idle_timeout_s
    first bytes of the next head  deadline = now + header_timeout_s
    writing paused (buffer full)  send deadline = now + send_timeout_s, cleared when the client reads

One sweep per service (a timer armed only while connections are open) closes those past a deadline:
a 408 if a head had begun, else silently. Beyond `max_connections` — clamped below the descriptor limit,
so accept() never meets EMFILE — or beyond `max_connections_per_client` from one address (so one client
cannot fill the rest: an appliance's heartbeat still finds a place), a new connection gets a canned 503
and is closed at once; the open ones are untouched. `lingering_time=0`: a response sent
before its body was read (a 413, a 401) closes the connection (`Connection: close`) instead of aiohttp
reading and discarding up to 10 s of that body; `handler_cancellation`: a client that hangs up stops
its handler.

Bodies. `Guard.read_body` refuses a Content-Encoding (415) and a Content-Length over the route's limit
(413) before reading a byte, reads a chunked body only up to the limit (413), whole within
body_timeout_s (408), and only while the service's budget of body bytes being received allows (503; one
body at a time always may). `parse_json` refuses what is not UTF-8 JSON, NaN/Infinity (and 1e999),
nesting deeper than MAX_JSON_DEPTH and a top level of the wrong type: each a 400 naming the problem.

aiohttp offers no hook for its protocol class, so this leans on three of its internals, all checked by
tests/contracts/test_webguard.py against the pinned aiohttp: `Server._kwargs` (the handler arguments the
app chose), `RequestHandler._request_count` (heads parsed) and `finish_response` (one call a response).
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
import resource
from typing import Annotated, Any, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from msgspec import Meta
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from contracts.logs import log_event
from contracts.structconf import Conf

__all__ = ["GUARD", "MAX_JSON_DEPTH", "Guard", "GuardConfig", "GuardedRunner", "RequestRefused", "BodyTooLarge",
           "BodyTimeout", "BadJson", "parse_json"]

MAX_JSON_DEPTH = 32
FD_RESERVE = 64  # descriptors kept for all but client connections: logs, files, outgoing connections
NEVER = math.inf
log = logging.getLogger("webguard")


# ---- refusals -------------------------------------------------------------------------------------

class RequestRefused(ValueError):
    status_hint = 400
    reason = "bad-request"


class BodyTooLarge(RequestRefused):
    status_hint = 413
    reason = "body-too-large"


class BodyTimeout(RequestRefused):
    status_hint = 408
    reason = "body-timeout"


class BodyEncoding(RequestRefused):
    status_hint = 415
    reason = "body-encoding"


class BodyMalformed(RequestRefused):
    reason = "body-malformed"  # broken chunked framing, or the client hung up mid-body


class BodiesBusy(RequestRefused):
    status_hint = 503
    reason = "busy"


class BadJson(RequestRefused):
    reason = "json-invalid"


class JsonTooDeep(BadJson):
    reason = "json-too-deep"


class JsonNonFinite(BadJson):
    reason = "json-non-finite"


class JsonWrongType(BadJson):
    reason = "json-wrong-type"


# ---- config ---------------------------------------------------------------------------------------

class GuardConfig(Conf):
    """The guard's settings: flat keys of a service's server section, beside listen/port. A section read
    is a Struct that subclasses this (origin's [serve], steering's [steering], playback's [playback])."""

    # A whole request head must arrive within header_timeout_s (slowloris); a keep-alive connection idle
    # for idle_timeout_s is closed; a whole body must arrive within body_timeout_s once its head has; a
    # client that takes no bytes of its response for send_timeout_s is dropped.
    header_timeout_s: Annotated[float, Meta(ge=0.1, le=3600)] = 10.0
    idle_timeout_s: Annotated[float, Meta(ge=0.1, le=86400)] = 75.0
    body_timeout_s: Annotated[float, Meta(ge=0.1, le=3600)] = 30.0
    send_timeout_s: Annotated[float, Meta(ge=0.1, le=3600)] = 60.0
    max_connections: Annotated[int, Meta(ge=1)] = 4096  # open client connections; beyond it: a 503, closed
    # from one address (0: no such cap), so one client can't fill the rest
    max_connections_per_client: Annotated[int, Meta(ge=0)] = 256
    max_body_bytes_in_flight: Annotated[int, Meta(ge=1 << 16)] = 256 << 20  # bodies being received at once, all routes


# ---- JSON -----------------------------------------------------------------------------------------

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}


def _non_finite(name: str) -> Any:
    raise JsonNonFinite(f"body: {name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonNonFinite(f"body: {text[:40]} is out of range")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def parse_json(raw: bytes, want: type | tuple[type, ...] = dict, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A request body as JSON of the type `want` (dict: an object), or a BadJson naming the problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJson(f"body: not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_non_finite, parse_float=_finite)
    except RequestRefused:
        raise
    except RecursionError:
        raise JsonTooDeep(f"body: nested deeper than {max_depth}") from None
    except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise BadJson(f"body: not JSON: {str(exc)[:120]}") from None
    if isinstance(value, (dict, list)) and _deeper_than(value, max_depth):
        raise JsonTooDeep(f"body: nested deeper than {max_depth}")
    if not isinstance(value, want):
        wanted = " or ".join(_JSON_TYPES[t] for t in (want if isinstance(want, tuple) else (want,)))
        raise JsonWrongType(f"body: must be a JSON {wanted}, not {_JSON_TYPES.get(type(value), 'value')}")
    return value


# ---- the guard ------------------------------------------------------------------------------------

def _canned(status: str, error: str, detail: str, extra: str = "") -> bytes:
    body = json.dumps({"error": error, "detail": detail}, separators=(",", ":")).encode()
    head = (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra}Connection: close\r\n\r\n")
    return head.encode() + body


_OVER_CAP = _canned("503 Service Unavailable", "too-many-connections", "connection limit reached",
                    "Retry-After: 1\r\n")
_HEADER_TIMEOUT = _canned("408 Request Timeout", "header-timeout", "the request head did not arrive in time")


class Guard:
    """One service's guard: its open connections and their sweep, the body budget, counters for
    /metrics. `config` is called when needed, so a reload's settings apply to the next connection
    (timeouts, cap) and the next body."""

    def __init__(self, config: Callable[[], GuardConfig], exempt: Callable[[str], bool] = lambda peer: False) -> None:
        self.config = config
        self.exempt = exempt  # peers the per-client cap does not apply to (e.g. our own load balancers)
        self.fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # read once, at start
        # connections
        self.open: set[GuardedHandler] = set()
        self.per_client: dict[str, int] = {}  # open connections per peer address
        self._sweep_handle: asyncio.TimerHandle | None = None
        # bodies
        self.body_bytes_in_flight = 0
        # counters
        self.connections_total = 0
        self.refused_total = 0
        self.header_timeouts_total = 0
        self.send_timeouts_total = 0
        self._registry: CollectorRegistry | None = None  # built at the first scrape

    def max_connections(self) -> int:
        limit = self.config().max_connections
        if self.fd_limit == resource.RLIM_INFINITY:
            return limit
        return min(limit, max(16, self.fd_limit - FD_RESERVE))

    def install(self, app: web.Application) -> None:
        """Before the app starts: the guard is app[GUARD]; a response whose request body was not read
        whole says `Connection: close` (and aiohttp, with lingering_time=0, closes)."""
        app[GUARD] = self
        app.on_response_prepare.append(_close_if_unread)

    # ---- connections ----

    def admits(self, peer: str) -> bool:
        if len(self.open) >= self.max_connections():
            return False
        per_client = self.config().max_connections_per_client
        return not per_client or self.per_client.get(peer, 0) < per_client or self.exempt(peer)

    def connected(self, handler: "GuardedHandler", loop: asyncio.AbstractEventLoop) -> None:
        self.open.add(handler)
        self.per_client[handler.peer] = self.per_client.get(handler.peer, 0) + 1
        self.connections_total += 1
        if self._sweep_handle is None:
            self._sweep_handle = loop.call_later(self._sweep_every_s(), self._sweep, loop)

    def disconnected(self, handler: "GuardedHandler") -> None:
        self.open.discard(handler)
        left = self.per_client.pop(handler.peer, 1) - 1
        if left:
            self.per_client[handler.peer] = left

    def _sweep_every_s(self) -> float:
        return min(0.5, self.config().header_timeout_s / 4)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._sweep_handle = None
        now = loop.time()
        for handler in [h for h in self.open if min(h.deadline, h.send_deadline) <= now]:
            if handler.send_deadline <= now:
                self.send_timeouts_total += 1
            else:
                self.header_timeouts_total += 1
            handler.time_out()
        if self.open:
            self._sweep_handle = loop.call_later(self._sweep_every_s(), self._sweep, loop)

    def stop(self) -> None:
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
            self._sweep_handle = None

    # ---- bodies ----

    async def read_body(self, request: web.Request, max_bytes: int) -> bytes:
        """The whole body, if it is at most `max_bytes` and arrives within body_timeout_s."""
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise BodyEncoding(f"Content-Encoding: {encoding[:40]!r} is not accepted")
        length = request.content_length
        if length is not None and length > max_bytes:
            raise BodyTooLarge(f"body: {length} bytes, the limit is {max_bytes}")
        cfg = self.config()
        reserve = max_bytes if length is None else length  # chunked: the most it may grow to
        if self.body_bytes_in_flight and self.body_bytes_in_flight + reserve > cfg.max_body_bytes_in_flight:
            raise BodiesBusy("too many request bodies in flight, retry shortly")
        self.body_bytes_in_flight += reserve
        try:
            return await _read(request, max_bytes, cfg.body_timeout_s)
        finally:
            self.body_bytes_in_flight -= reserve

    async def read_json(self, request: web.Request, max_bytes: int, want: type | tuple[type, ...] = dict) -> Any:
        return parse_json(await self.read_body(request, max_bytes), want)

    def metrics_text(self, prefix: str) -> str:
        """Prometheus text (prometheus-client): `<prefix>_connections_open` and the counters."""
        if self._registry is None:
            self._registry = CollectorRegistry()
            self._registry.register(_GuardCollector(self, prefix))
        return generate_latest(self._registry).decode()


class _GuardCollector:
    """Reads the guard's plain counters at scrape time: the per-connection path stays integer adds."""

    def __init__(self, guard: Guard, prefix: str) -> None:
        self.guard, self.prefix = guard, prefix

    def collect(self) -> Any:
        g, p = self.guard, self.prefix
        yield GaugeMetricFamily(f"{p}_connections_open", "Client connections open now.", value=len(g.open))
        yield CounterMetricFamily(f"{p}_connections", "Client connections accepted.", value=g.connections_total)
        yield CounterMetricFamily(f"{p}_connections_refused", "Connections refused over a cap (503, closed).",
                                  value=g.refused_total)
        yield CounterMetricFamily(f"{p}_header_timeouts", "Connections closed for a request head not sent in time.",
                                  value=g.header_timeouts_total)
        yield CounterMetricFamily(f"{p}_send_timeouts", "Connections closed for a client not reading its response.",
                                  value=g.send_timeouts_total)
        yield GaugeMetricFamily(f"{p}_body_bytes_in_flight", "Request body bytes being received now.",
                                value=g.body_bytes_in_flight)


GUARD = web.AppKey("webguard", Guard)


async def _read(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > max_bytes:
                    raise BodyTooLarge(f"body: more than {max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(f"body: not received whole within {timeout_s:g} s") from None
    except (RequestPayloadError, ConnectionError) as exc:
        raise BodyMalformed(f"body: {str(exc)[:120] or type(exc).__name__}") from None
    return b"".join(chunks)


async def _close_if_unread(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare (after aiohttp chose the Connection header, before it is written)."""
    if request.body_exists and request.can_read_body:
        response.force_close()
        response.headers["Connection"] = "close"


class GuardedHandler(RequestHandler):
    """aiohttp's per-connection protocol plus the guard's deadline (see the module's table). aiohttp
    counts parsed heads (`_request_count`); `answered` counts finished responses: equal means the
    connection is between requests, so bytes arriving then begin a head."""

    __slots__ = ("guard", "peer", "deadline", "send_deadline", "in_head", "answered", "refused")

    def __init__(self, manager: web.Server, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.peer = ""  # the client's address, for the per-client cap
        self.deadline = NEVER
        self.send_deadline = NEVER  # set while the transport's write buffer is full
        self.in_head = False  # bytes of a head arrived, the head is not complete
        self.answered = 0
        self.refused = False  # over the cap: answered 503 and closed, never handed to aiohttp

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        peername = transport.get_extra_info("peername")
        self.peer = str(peername[0]) if peername else ""
        if not guard.admits(self.peer):
            self.refused = True
            guard.refused_total += 1
            transport.write(_OVER_CAP)  # type: ignore[attr-defined]
            transport.close()
            return
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + guard.config().header_timeout_s
        guard.connected(self, loop)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.refused:
            return
        self.guard.disconnected(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        super().data_received(data)
        if self._request_count != heads:  # a complete head: its handler runs, read_body bounds the body
            self.in_head, self.deadline = False, NEVER
        elif data and not self.in_head and self.answered == heads:  # the first bytes of the next head
            self.in_head = True
            self.deadline = min(self.deadline, self._loop.time() + self.guard.config().header_timeout_s)

    async def finish_response(self, request: Any, resp: Any, start_time: float | None) -> Any:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self.answered += 1

    def pause_writing(self) -> None:
        super().pause_writing()
        self.send_deadline = self._loop.time() + self.guard.config().send_timeout_s

    def resume_writing(self) -> None:
        super().resume_writing()
        self.send_deadline = NEVER

    def time_out(self) -> None:
        stalled_send = self.send_deadline != NEVER
        self.deadline = self.send_deadline = NEVER
        if self.transport is not None:
            if stalled_send:  # close() would wait for the full buffer to drain, i.e. forever
                self.transport.abort()
            elif self.in_head:
                self.transport.write(_HEADER_TIMEOUT)
        self.force_close()


class _GuardedServer(web.Server):
    """aiohttp's connection factory, building GuardedHandlers (aiohttp has no hook for the class)."""

    def __init__(self, guard: Guard, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> GuardedHandler:
        kwargs = {**self._kwargs, "keepalive_timeout": self.guard.config().idle_timeout_s}
        return GuardedHandler(self, self.guard, loop=self._loop, **kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections are guarded by `guard` (already installed on the app)."""

    def __init__(self, app: web.Application, guard: Guard, **kwargs: Any) -> None:
        super().__init__(app, lingering_time=0, handler_cancellation=True, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's startup; the handler kwargs are in plain._kwargs
        cap, configured = self.guard.max_connections(), self.guard.config().max_connections
        if cap < configured:
            log_event(log, "connection-cap-clamped", logging.WARNING, max_connections=configured, cap=cap,
                      descriptor_limit=self.guard.fd_limit)
        return _GuardedServer(self.guard, plain.request_handler, request_factory=plain.request_factory,
                              handler_cancellation=plain.handler_cancellation, loop=asyncio.get_running_loop(),
                              **plain._kwargs)

    async def cleanup(self) -> None:
        try:
            await super().cleanup()
        finally:
            self.guard.stop()
