"""The body of `origin serve`'s file responses: what to send for a range verdict, and sending it.

`body_for(verdict, size, content_type, boundary)` turns a contracts.ranges verdict into the response
(status, length, headers) and its body as pieces in order: bytes (the heads and tail of a
multipart/byteranges body) and windows of the file (ByteRange). It is pure; `send(...)` is the shell.

With sendfile (the default; config `serve.sendfile`), each window goes from the page cache to the
socket by `loop.sendfile` on aiohttp's transport — asyncio first waits for what the transport holds
(the response head, a part head) to drain, so the order on the wire is kept — and no body byte passes
through Python. Without it (`serve.sendfile = false`, or a loop with no sendfile, as uvloop), windows
are read with pread in a thread and written through the transport. aiohttp's FileResponse also uses
sendfile, but decides ranges itself (one range only; If-Range by date only): the origin must answer
as the appliance does, so it prepares a plain StreamResponse and sends the body as FileResponse does
inside.

A client that stops reading: written through the transport, a full socket buffer pauses writing and
contracts.webguard drops the client after send_timeout_s. sendfile bypasses the transport's buffer, so
the guard cannot see that stall; here each step (at most `step_bytes`) must finish within
`stall_timeout_s`, else the connection is aborted and `send` says why. Every failure after the head
is sent (a stall, a client gone, a file that shrank under us) aborts the connection: the length was
promised, so a short body must not look complete.
"""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import BinaryIO, Callable

from aiohttp import web

from contracts.ranges import ByteRange, Partial, RangeVerdict, Unsatisfiable, multipart_layout

Piece = bytes | ByteRange


@dataclass(frozen=True, slots=True)
class Body:
    """What to answer: the status, the body's length and pieces, the headers that depend on the verdict."""

    status: int
    length: int
    pieces: tuple[Piece, ...]
    headers: dict[str, str]


def body_for(verdict: RangeVerdict, size: int, content_type: str, boundary: str) -> Body:
    """The response for a verdict on a file of `size` bytes (RFC 9110 §14.4, §15.3.7, §15.5.17)."""
    if type(verdict) is Unsatisfiable:
        return Body(416, 0, (), {"Content-Range": f"bytes */{size}", "Content-Type": content_type})
    if type(verdict) is Partial:
        ranges = verdict.ranges
        if len(ranges) == 1:
            r = ranges[0]
            return Body(206, r.length, (r,), {"Content-Range": r.content_range(size), "Content-Type": content_type})
        layout = multipart_layout(ranges, size, content_type, boundary)
        pieces: list[Piece] = []
        for head, r in zip(layout.heads, ranges):
            pieces += (head, r)
        pieces.append(layout.tail)
        return Body(206, layout.length, tuple(pieces), {"Content-Type": layout.content_type})
    return Body(200, size, (ByteRange(0, size),) if size else (), {"Content-Type": content_type})


@dataclass(frozen=True, slots=True)
class Sending:
    """How bodies are sent (from the config, per request: a reload applies to the next response)."""

    sendfile: bool
    step_bytes: int
    stall_timeout_s: float


async def send(request: web.Request, response: web.StreamResponse, fh: BinaryIO, pieces: tuple[Piece, ...],
               how: Sending, sent: Callable[[int], None]) -> str | None:
    """Write the pieces after `response.prepare()`. None when all were sent; else why the connection
    was aborted ("stalled", "client-gone", "file-shrank"). `sent(n)` is called as file bytes go out."""
    use_sendfile = how.sendfile
    for piece in pieces:
        if type(piece) is bytes:
            try:
                await response.write(piece)
            except ConnectionError:
                return _abort(request, "client-gone")
            continue
        offset, end = piece.start, piece.end
        while offset < end:
            n = min(how.step_bytes, end - offset)
            try:  # a copy is timed by the guard (its writes pause); a sendfile step is timed here
                async with asyncio.timeout(how.stall_timeout_s if use_sendfile else None):
                    got = await (_sendfile(request, fh, offset, n) if use_sendfile else _copy(response, fh, offset, n))
            except NotImplementedError:  # a loop without sendfile: copy from here on
                use_sendfile = False
                continue
            except TimeoutError:
                return _abort(request, "stalled")
            except OSError:  # ConnectionError, a closing transport, EIO
                return _abort(request, "client-gone")
            if got < n:
                return _abort(request, "file-shrank")
            offset += got
            sent(got)
    return None


async def _sendfile(request: web.Request, fh: BinaryIO, offset: int, n: int) -> int:
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("connection lost")
    return await asyncio.get_running_loop().sendfile(transport, fh, offset, n)  # type: ignore[arg-type]


async def _copy(response: web.StreamResponse, fh: BinaryIO, offset: int, n: int) -> int:
    data = await asyncio.to_thread(os.pread, fh.fileno(), n, offset)
    if data:
        await response.write(data)  # waits while the client is slow; the guard times a full buffer
    return len(data)


def _abort(request: web.Request, reason: str) -> str:
    if request.transport is not None:
        request.transport.abort()
    return reason
