"""contracts.webguard: the bounded JSON reader and the guard's settings (pure, table-tested), and the
connection state machine on a real socket in-process — a head that begins after a keep-alive response
gets the header timeout (a 408), not the idle one; pipelined requests are answered; a body is bounded
by size and time. The services' own abuse tests (tests/*/test_*_abuse.py) run them as real processes."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from contracts.structconf import ConfigError, convert
from contracts.webguard import (GUARD, MAX_JSON_DEPTH, BadJson, Guard, GuardConfig, GuardedRunner, RequestRefused,
                                parse_json)


def nested(depth: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * depth + close * depth


GOOD = [
    ("object", b'{"a": 1}', dict, {"a": 1}),
    ("empty object", b"{}", dict, {}),
    ("unicode", '{"t": "Amélie"}'.encode(), dict, {"t": "Amélie"}),
    ("big finite float", b'{"x": 1e308}', dict, {"x": 1e308}),
    ("array where allowed", b"[1, 2]", (dict, list), [1, 2]),
    ("at the depth limit", nested(MAX_JSON_DEPTH), list, json.loads(nested(MAX_JSON_DEPTH))),
    ("whitespace around", b' \n{"a": null}\t', dict, {"a": None}),
]


@pytest.mark.parametrize("raw,want,value", [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_json_accepted(raw, want, value):
    assert parse_json(raw, want) == value


BAD = [
    ("Infinity", b'{"ttl_s": Infinity}', dict, "json-non-finite"),
    ("-Infinity", b'{"ttl_s": -Infinity}', dict, "json-non-finite"),
    ("NaN", b'{"ttl_s": NaN}', dict, "json-non-finite"),
    ("1e999", b'{"ttl_s": 1e999}', dict, "json-non-finite"),
    ("-1e999 in an array", b'{"a": [1, -1e999]}', dict, "json-non-finite"),
    ("one past the depth limit", nested(MAX_JSON_DEPTH + 1), list, "json-too-deep"),
    ("objects too deep", b'{"a":' * 40 + b"1" + b"}" * 40, dict, "json-too-deep"),
    ("past the interpreter's recursion", nested(100_000), list, "json-too-deep"),
    ("unclosed, deep", b"[" * 100_000, list, "json-too-deep"),
    ("null for an object", b"null", dict, "json-wrong-type"),
    ("array for an object", b"[]", dict, "json-wrong-type"),
    ("string for an object", b'"x"', dict, "json-wrong-type"),
    ("number for an object or array", b"5", (dict, list), "json-wrong-type"),
    ("bool for an object", b"true", dict, "json-wrong-type"),
    ("not UTF-8", b'{"a": "\xff"}', dict, "json-invalid"),
    ("UTF-16", '{"a": 1}'.encode("utf-16"), dict, "json-invalid"),
    ("empty", b"", dict, "json-invalid"),
    ("truncated", b'{"a": [1, 2', dict, "json-invalid"),
    ("trailing garbage", b'{"a": 1} x', dict, "json-invalid"),
    ("5000-digit integer", b'{"a": ' + b"9" * 5000 + b"}", dict, "json-invalid"),
    ("single quotes", b"{'a': 1}", dict, "json-invalid"),
]


@pytest.mark.parametrize("raw,want,reason", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_json_refused_with_a_400_naming_the_problem(raw, want, reason):
    with pytest.raises(BadJson) as refused:
        parse_json(raw, want)
    assert (refused.value.status_hint, refused.value.reason) == (400, reason)
    assert str(refused.value).startswith("body: ")


def test_guard_settings_default_and_parse():
    assert convert(GuardConfig, {}) == GuardConfig()
    given = {"header_timeout_s": 1, "idle_timeout_s": 2.5, "body_timeout_s": 3, "send_timeout_s": 4,
             "max_connections": 10, "max_connections_per_client": 0, "max_body_bytes_in_flight": 1 << 20}
    assert convert(GuardConfig, given, where="serve") == GuardConfig(**given)


@pytest.mark.parametrize("key,value,message", [
    ("header_timeout_s", 0, "serve.header_timeout_s: must be at least 0.1"),
    ("idle_timeout_s", "long", "serve.idle_timeout_s: must be a number"),
    ("send_timeout_s", 0.01, "serve.send_timeout_s: must be at least 0.1"),
    ("max_connections", 0, "serve.max_connections: must be at least 1"),
    ("max_connections_per_client", -1, "serve.max_connections_per_client: must be at least 0"),
    ("max_body_bytes_in_flight", 1000, "serve.max_body_bytes_in_flight: must be at least 65536"),
])
def test_guard_settings_errors_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        convert(GuardConfig, {key: value}, where="serve")


# ---- the connection state machine, in-process --------------------------------------------------

async def echo(request: web.Request) -> web.Response:
    """Reads up to 1000 bytes; refusals answered as the services' `refusals` wrappers do."""
    try:
        body = await request.app[GUARD].read_body(request, 1000)
    except RequestRefused as exc:
        return web.json_response({"error": exc.reason, "detail": str(exc)}, status=exc.status_hint)
    return web.json_response({"got": len(body)})


async def index(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def big(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for _ in range(400):  # 100 MB: far more than the socket buffers hold
        await response.write(b"x" * (256 << 10))
    return response


async def served(config: GuardConfig, client) -> None:
    app = web.Application()
    guard = Guard(lambda: config)
    guard.install(app)
    app.router.add_post("/echo", echo)
    app.router.add_get("/", index)
    app.router.add_get("/big", big)
    runner = GuardedRunner(app, guard, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        await client(runner.addresses[0][1], guard)
    finally:
        await runner.cleanup()


async def reply(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


GET = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
CONFIG = GuardConfig(header_timeout_s=0.4, idle_timeout_s=3.0, body_timeout_s=0.4)


def test_a_head_begun_after_a_keepalive_response_gets_the_header_timeout():
    async def client(port: int, guard: Guard) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET + GET)  # pipelined: both answered
        assert (await reply(reader)).startswith(b"HTTP/1.1 200 ") and (await reply(reader)).startswith(b"HTTP/1.1 200 ")
        await asyncio.sleep(0.6)  # idle past the header timeout: still open (idle_timeout_s is 3)
        writer.write(b"GET / HTTP/1.1\r\nHost")
        started = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), 3)  # ... until its next head stalls
        assert rest.startswith(b"HTTP/1.1 408 ") and b'"header-timeout"' in rest
        assert 0.3 < time.monotonic() - started < 1.5
        assert guard.header_timeouts_total == 1
        writer.close()
    asyncio.run(served(CONFIG, client))


def test_bodies_are_bounded_by_size_and_time():
    async def client(port: int, guard: Guard) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
        assert (await reply(reader)).endswith(b'{"got": 5}')
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhel")  # stalls
        stalled = await asyncio.wait_for(reader.read(), 3)  # answered, then closed (the body was not read whole)
        assert stalled.startswith(b"HTTP/1.1 408 ") and b'"body-timeout"' in stalled
        assert b"Connection: close" in stalled
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + b"200\r\n" + b"x" * 512
                     + b"\r\n" + b"200\r\n" + b"x" * 512 + b"\r\n")  # 1024 > 1000, chunked
        over = await asyncio.wait_for(reader.read(), 3)
        assert over.startswith(b"HTTP/1.1 413 ") and b'"body-too-large"' in over
        assert guard.body_bytes_in_flight == 0
        writer.close()
    asyncio.run(served(CONFIG, client))


def test_over_the_cap_a_connection_is_answered_503_and_closed():
    async def client(port: int, guard: Guard) -> None:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await asyncio.wait_for(reader.read(), 3)
        assert refused.startswith(b"HTTP/1.1 503 ") and b'"too-many-connections"' in refused
        held[0][1].write(GET)
        assert (await reply(held[0][0])).startswith(b"HTTP/1.1 200 ")
        assert (len(guard.open), guard.refused_total) == (3, 1)
        for _, w in held:
            w.close()
        writer.close()
    asyncio.run(served(GuardConfig(max_connections=3, header_timeout_s=5), client))


def test_a_client_that_stops_reading_its_response_is_dropped():
    async def client(port: int, guard: Guard) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
        writer.write(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        await writer.drain()
        started = time.monotonic()
        await asyncio.sleep(0.2)
        for _ in range(100):  # bounded: 5 s; we read nothing meanwhile
            if not guard.open:
                break
            await asyncio.sleep(0.05)
        assert (guard.open, guard.send_timeouts_total) == (set(), 1)
        assert 0.3 < time.monotonic() - started < 2.5
        writer.close()
    asyncio.run(served(GuardConfig(send_timeout_s=0.4), client))
