"""The access log: one line per response, at about nginx's cost.

Strategy (nginx's `access_log … buffer=64k flush=1s`): a line is one `%` format of pieces made
earlier — the worker's part once, the client's part once per connection (`client_piece`), the file's
part once per open file (`OpenFile.log_piece`) — appended to a per-worker list: no dict, no
json.dumps, no syscall per response (the hot path's responses come through `hit`: the same line,
fewer fields to pass, nothing to escape). The list goes out in one `write` when it holds
`buffer_bytes`, every `flush_s` (the worker's chore), and on SIGHUP, drain and shutdown, so a stop
loses nothing.
A file is opened O_APPEND: every worker of the appliance appends whole lines to the one file (one
write per flush; towards a pipe or socket, in pieces of at most PIPE_BUF cut at line ends, which
the kernel keeps whole). SIGUSR1 (logrotate's postrotate) writes what is held to the old file, then
reopens the path; if that fails the old file is kept.

A failing write (a full disk) never stops serving: the lines are dropped and counted in the shared
counters (`access_log_dropped_lines`/`_bytes`), the `access_log_failing` gauge holds this worker
until a write succeeds again (/v1/health says "access-log"), and one event on stdout says so. A line
cut by a short write is closed with a newline before the next write, so later lines stay whole.
Writes block, as nginx's do: a regular file takes a 64 KiB append into the page cache in
microseconds.

Formats: "json" (the default; one object per line, `event: "request"`, the fields tests and
steering's request-id lookup read) and "combined" (nginx's, the query string — the URL's token —
left out of the request line, then `"request-id" "client-prefix"`). The request id (`X-Request-Id`,
or the `rid=` steering put in the URL) and the client's prefix (as tokens bind it) are in every line.
A response cut short (its client gone, a timeout, a failed disk) is logged too, as nginx does, with
the bytes that went out and `reason: cut-short`.
"""
from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from json.encoder import encode_basestring_ascii as _json_str  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, Callable

from contracts.token import client_prefix_for
from oca.metrics import WorkerMetrics

# Formatted with the worker number first (`%%` survives as `%`), then per line; with and without a Range.
_JSON = '{"ts":%%s,"event":"request","worker":%d%%s,"status":%%d,"bytes":%%d,"ms":%%.3f,"method":"%%s"%%s%%s%%s}\n'
_JSON_RANGE = ('{"ts":%%s,"event":"request","worker":%d%%s,"status":%%d,"bytes":%%d,"ms":%%.3f,"method":"%%s"%%s'
               ',"range":%%s%%s%%s}\n')
# The same lines for the hot path's responses (`hit`): a GET, no reason, a range with nothing to escape.
_JSON_HIT = '{"ts":%%s,"event":"request","worker":%d%%s,"status":%%d,"bytes":%%d,"ms":%%.3f,"method":"GET"%%s%%s}\n'
_JSON_HIT_RANGE = ('{"ts":%%s,"event":"request","worker":%d%%s,"status":%%d,"bytes":%%d,"ms":%%.3f,"method":"GET"'
                   '%%s,"range":"%%s"%%s}\n')
_COMBINED = '%s - - %s "%s %s HTTP/%s" %d %d "%s" "%s" "%s" "%s"\n'
_RID = re.compile(rb"[?&]rid=([A-Za-z0-9_.\-]{1,64})(?:&|$)")
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
_PIPE_BUF = 4096  # writes up to this size to a pipe are never interleaved with another writer's
_CLIENTS_CACHED = 65536


def rid_of(target: bytes) -> str | None:
    """The request id steering put in the URL (`rid=`), tying this line to its steering decision."""
    m = _RID.search(target)
    return m.group(1).decode("ascii") if m else None


def file_piece(key: str, tier: str) -> str:
    """An open file's part of a JSON line, made once per open file."""
    return f',"key":{json.dumps(key)},"tier":{json.dumps(tier)}'


def _nginx_escape(raw: bytes) -> str:
    """A request field as nginx writes it: printable ASCII as is, anything else (and `"`, `\\`) as \\xHH."""
    text = raw.decode("latin-1")
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(c if " " <= c < "\x7f" and c not in '"\\' else "\\x%02X" % ord(c) for c in text)


class AccessLog:
    """One worker's access log: its buffer and its destination (a file path, or stdout when None)."""

    def __init__(self, path: Path | None, fmt: str, buffer_bytes: int, metrics: WorkerMetrics, worker: int,
                 on_event: Callable[..., None], prefix_bits: tuple[int, int] = (24, 48)) -> None:
        # configuration
        self.path = path
        self.buffer_bytes = buffer_bytes
        self.prefix_bits = prefix_bits
        self.metrics = metrics
        self.on_event = on_event
        self.line = self._json_line if fmt == "json" else self._combined_line
        self.hit = self._json_hit if fmt == "json" else self._combined_hit
        self.client_piece = self._json_client if fmt == "json" else self._combined_client
        self._json = _JSON % worker  # the worker's part, formatted once
        self._json_range = _JSON_RANGE % worker
        self._json_hit_plain = _JSON_HIT % worker
        self._json_hit_range = _JSON_HIT_RANGE % worker
        # the buffer
        self.lines: list[str] = []
        self.size = 0
        # the destination
        self.fd = -1
        self.whole_writes = True  # a regular file: one write per flush (else PIPE_BUF pieces)
        self.failing = False  # the last write (or open) failed; the gauge says so
        self.torn = False  # a short write left a partial line in the file
        # per-connection, per-millisecond and per-second pieces
        self._clients: dict[str | None, Any] = {}
        self._ms = -1
        self._ts = ""
        self._second = -1
        self._stamp = ""
        self._open()

    # ---- lines ---------------------------------------------------------------------------------
    # `line(...)` is one of the two below; both take the same fields, positionally (the hot path):
    # `now` is the wall clock (time.time()), `seconds` the response's duration.
    def _json_line(self, client: str, method: str, target: bytes, version: str, range_: str | None,
                   request_id: str | None, agent: bytes | None, referer: bytes | None, status: int,
                   nbytes: int, now: float, seconds: float, of: Any, reason: str | None) -> None:
        ms = int(now * 1000.0)
        if ms != self._ms:  # under load many lines share a millisecond: format its time once
            self._ms = ms
            self._ts = "%d.%03d" % divmod(ms, 1000)
        if request_id is None and target.find(b"rid=") >= 0:  # find: faster than `in` on bytes
            request_id = rid_of(target)
        rid = ',"request_id":"%s"' % request_id if request_id else ""
        file = of.log_piece if of is not None else ""
        why = ',"reason":"%s"' % reason if reason is not None else ""
        if range_ is None:
            line = self._json % (self._ts, client, status, nbytes, seconds * 1000.0, method, rid, file, why)
        else:  # the header as sent (escaped; at most 200 characters)
            line = self._json_range % (self._ts, client, status, nbytes, seconds * 1000.0, method, rid,
                                       _json_str(range_[:200]), file, why)
        self.lines.append(line)
        self.size += len(line)
        if self.size >= self.buffer_bytes:
            self.flush()

    # `hit(...)`, one of the two below, is `line(...)` for the hot path's responses (protocol.Connection
    # ._fast), with fewer fields to pass and less to check: a GET over HTTP/1.1 without an X-Request-Id
    # header or a reason, `range_` None or one plain range that single_range took (nothing to escape).
    # The same line as `line` would write (tested).
    def _json_hit(self, client: str, target: bytes, range_: str | None, status: int, nbytes: int, now: float,
                  seconds: float, of: Any, agent: bytes | None, referer: bytes | None) -> None:
        ms = int(now * 1000.0)
        if ms != self._ms:
            self._ms = ms
            self._ts = "%d.%03d" % divmod(ms, 1000)
        rid = ""
        if target.find(b"rid=") >= 0:
            request_id = rid_of(target)
            if request_id:
                rid = ',"request_id":"%s"' % request_id
        if range_ is None:
            line = self._json_hit_plain % (self._ts, client, status, nbytes, seconds * 1000.0, rid, of.log_piece)
        else:
            line = self._json_hit_range % (self._ts, client, status, nbytes, seconds * 1000.0, rid, range_,
                                           of.log_piece)
        self.lines.append(line)
        self.size += len(line)
        if self.size >= self.buffer_bytes:
            self.flush()

    def _combined_hit(self, client: tuple[str, str], target: bytes, range_: str | None, status: int, nbytes: int,
                      now: float, seconds: float, of: Any, agent: bytes | None, referer: bytes | None,
                      method: str = "GET", version: str = "1.1", request_id: str | None = None) -> None:
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second))
        if request_id is None and target.find(b"rid=") >= 0:
            request_id = rid_of(target)
        line = _COMBINED % (client[0], self._stamp, method, _nginx_escape(target.partition(b"?")[0]) or "-",
                            version, status, nbytes, _nginx_escape(referer) if referer else "-",
                            _nginx_escape(agent) if agent else "-", request_id or "-", client[1])
        self.lines.append(line)
        self.size += len(line)
        if self.size >= self.buffer_bytes:
            self.flush()

    def _combined_line(self, client: tuple[str, str], method: str, target: bytes, version: str,
                       range_: str | None, request_id: str | None, agent: bytes | None, referer: bytes | None,
                       status: int, nbytes: int, now: float, seconds: float, of: Any, reason: str | None) -> None:
        # The general path's entry: a combined line has no range, duration, file or reason, so the hot
        # path's writer makes every combined line.
        self._combined_hit(client, target, range_, status, nbytes, now, seconds, of, agent, referer, method, version,
                           request_id)

    def request(self, client: Any, req: Any, status: int, nbytes: int, seconds: float, of: Any,
                reason: str | None) -> None:
        """A response of the general path (`req` a writer.Request, or None for an unparsable one)."""
        if req is None:
            self.line(client, "-", b"", "1.1", None, None, None, None, status, nbytes, time.time(), seconds, of,
                      reason)
        else:
            self.line(client, req.method, req.target, req.version, req.range, req.request_id, req.user_agent,
                      req.referer, status, nbytes, time.time(), seconds, of, reason)

    def _prefix(self, client: str | None) -> str:
        try:
            return str(client_prefix_for(client, *self.prefix_bits)) if client else "-"
        except ValueError:
            return "-"

    def _json_client(self, client: str | None) -> str:
        piece = self._clients.get(client)
        if piece is None:
            if len(self._clients) >= _CLIENTS_CACHED:
                self._clients.clear()
            piece = self._clients[client] = ',"client":%s,"prefix":"%s"' % (
                _json_str(client) if client else "null", self._prefix(client))
        return piece

    def _combined_client(self, client: str | None) -> tuple[str, str]:
        piece = self._clients.get(client)
        if piece is None:
            if len(self._clients) >= _CLIENTS_CACHED:
                self._clients.clear()
            piece = self._clients[client] = (client or "-", self._prefix(client))
        return piece

    # ---- writing -------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write every buffered line (the chore every flush_s, a full buffer, SIGHUP, drain, stop)."""
        lines = self.lines
        if not lines:
            return
        data = "".join(lines).encode()
        self.lines = []
        self.size = 0
        if self.fd < 0 and not self._open():
            self._lost(data, 0, None)
            return
        self._write(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        done = 0
        try:
            if self.torn:  # end the line a short write cut, so the next ones stand whole
                os.write(self.fd, b"\n")
                self.torn = False
            while done < len(data):
                end = len(data) if self.whole_writes else _cut(data, done)
                done += os.write(self.fd, view[done:end])
        except OSError as exc:
            self._lost(data, done, exc)
            return
        if self.failing:
            self.failing = False
            self.metrics.add("access_log_failing", -1)
            self.on_event("access-log-recovered", path=self._where())

    def _lost(self, data: bytes, done: int, exc: OSError | None) -> None:
        """Lines that could not be written: counted, never retried (serving goes on)."""
        self.metrics.add("access_log_dropped_lines", data.count(b"\n", done))
        self.metrics.add("access_log_dropped_bytes", len(data) - done)
        if done:
            self.torn = data[done - 1] != 0x0A
        if not self.failing:
            self.failing = True
            self.metrics.add("access_log_failing", 1)
            self.on_event("access-log-write-failed", path=self._where(),
                          error=str(exc) if exc is not None else "not open")

    def _open(self) -> bool:
        """Open the destination at start, or when a flush finds none open (counted as failing)."""
        try:
            self._use(self._open_fd())
        except OSError as exc:
            if not self.failing:
                self.failing = True
                self.metrics.add("access_log_failing", 1)
                self.on_event("access-log-open-failed", path=self._where(), error=str(exc))
            return False
        return True

    def _open_fd(self) -> int:
        return sys.stdout.fileno() if self.path is None else os.open(self.path, _OPEN_FLAGS, 0o640)

    def _use(self, fd: int) -> None:
        self.fd = fd
        self.whole_writes = _is_regular(fd)

    def reopen(self) -> None:
        """SIGUSR1: what is held goes to the file as it is now (renamed by logrotate), then the path
        is opened again; a path that cannot be opened keeps the old file."""
        self.flush()
        if self.path is None:
            return
        if self.fd < 0:
            if self._open():
                self.on_event("access-log-reopened", path=self._where())
            return
        try:
            fd = self._open_fd()
        except OSError as exc:
            self.on_event("access-log-reopen-failed", path=self._where(), error=str(exc))
            return
        old = self.fd
        self._use(fd)
        os.close(old)
        self.on_event("access-log-reopened", path=self._where())

    def close(self) -> None:
        """Shutdown: write what is held, close the file, clear this worker's failing gauge."""
        self.flush()
        if self.path is not None and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
        if self.failing:
            self.failing = False
            self.metrics.add("access_log_failing", -1)

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "stdout"


def _is_regular(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def _cut(data: bytes, start: int) -> int:
    """Where the next write to a pipe ends: the last line end within PIPE_BUF bytes (a longer line whole)."""
    if len(data) - start <= _PIPE_BUF:
        return len(data)
    end = data.rfind(b"\n", start, start + _PIPE_BUF)
    if end < 0:
        end = data.find(b"\n", start + _PIPE_BUF)
        return len(data) if end < 0 else end + 1
    return end + 1
