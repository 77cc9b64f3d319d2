"""The access log: its config (table-driven), its lines and buffer (oca/http/accesslog.py in
process), and real `oca serve` appliances logging to a file: every line whole and in order under load
from several connections and two workers, nothing lost on a SIGTERM drain or a SIGHUP reload (the
buffer is set so large that every line is still in memory when the signal comes), SIGUSR1 reopening
after a rename (logrotate's way), a full disk under the log that stops nothing (counted in
/metrics, "access-log" degraded on /v1/health, healthy again once there is room), and a response cut
short by its client logged with the bytes that went out.

No assertion depends on timing: load is a bounded number of requests to 127.0.0.1, and each wait is
for an event the appliance logs (a reload, a reopen), with a generous deadline only as a backstop.
"""
from __future__ import annotations

import errno
import http.client
import json
import os
import re
import signal
import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from oca import config as oca_config
from oca.config import ConfigError, HttpConfig
from oca.http import accesslog
from oca.http.accesslog import AccessLog, file_piece
from oca.metrics import INDEX, WorkerMetrics

KEY = "al/file.mp4"
DATA = os.urandom(1 << 20)
STRIDE = 100_000  # a request's byte offset encodes its connection and sequence number: conn * STRIDE + seq


# -- config ------------------------------------------------------------------------------------------

MINIMAL: dict[str, Any] = {
    "appliance": {"id": "oca-1"},
    "tokens": {"key_file": "/etc/oca/keys.toml"},
    "store": {"index": "/var/lib/oca/index.db"},
    "tiers": {"ssd": [{"path": "/srv/oca/ssd0"}]},
}


def with_(dotted: str, value: Any) -> dict[str, Any]:
    """MINIMAL with one `http.*` key set."""
    section, key = dotted.split(".")
    return {**MINIMAL, section: {key: value}}

@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), ("stdout", True), ("journald", True),
    ("/var/log/oca/access.log", Path("/var/log/oca/access.log")),
], ids=["true", "false", "stdout", "journald", "file"])
def test_access_log_destination(value: Any, expected: Any) -> None:
    assert oca_config.parse(with_("http.access_log", value)).http.access_log == expected


def test_relative_log_path_is_taken_against_the_config_directory(tmp_path: Path) -> None:
    cfg = oca_config.parse(with_("http.access_log", "logs/access.log"), base=tmp_path)
    assert cfg.http.access_log == tmp_path / "logs" / "access.log"


def test_defaults() -> None:
    http = oca_config.parse(MINIMAL).http
    assert http == HttpConfig()
    assert (http.access_log, http.access_log_format, http.access_log_buffer_bytes, http.access_log_flush_s) == (
        True, "json", 65536, 1.0)


@pytest.mark.parametrize("mapping, message", [
    (with_("http.access_log", 1), 'http.access_log: must be true, false, "stdout" or a file path'),
    (with_("http.access_log", ""), 'http.access_log: must be true, false, "stdout" or a file path'),
    (with_("http.access_log", "/var/log/oca/"), 'http.access_log: must be true, false, "stdout" or a file path'),
    (with_("http.access_log", "access.log"), "http.access_log: must be an absolute path"),
    (with_("http.access_log_format", "main"), "http.access_log_format: must be one of json, combined"),
    (with_("http.access_log_buffer_bytes", -1), "http.access_log_buffer_bytes: must be at least 0"),
    (with_("http.access_log_buffer_bytes", "64k"), "http.access_log_buffer_bytes: must be an integer"),
    (with_("http.access_log_flush_s", 0), "http.access_log_flush_s: must be at least 0.01"),
    (with_("http.access_log_flushs", 1), "http.access_log_flushs: unknown setting (did you mean 'access_log_flush_s'?)"),
], ids=["number", "empty", "directory", "relative-without-base", "format", "negative-buffer", "buffer-string",
        "zero-flush", "typo"])
def test_config_errors_name_the_key(mapping: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        oca_config.parse(mapping)
    assert str(err.value) == message


# -- lines and the buffer, in process ----------------------------------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def names(self) -> list[str]:
        return [e for e, _ in self.events]


def _log(path: Path | None, fmt: str = "json", buffer_bytes: int = 65536) -> tuple[AccessLog, WorkerMetrics, Recorder]:
    metrics, events = WorkerMetrics(None, 0), Recorder()
    return AccessLog(path, fmt, buffer_bytes, metrics, 3, events, (24, 48)), metrics, events


_OF = SimpleNamespace(log_piece=file_piece("t/a.mp4", "ssd"))


def _line(log: AccessLog, client: str = "192.0.2.7", target: bytes = b"/t/a.mp4?e=1&s=x", range_: str | None = None,
          request_id: str | None = None, agent: bytes | None = None, status: int = 206, of: Any = _OF,
          reason: str | None = None) -> None:
    log.line(log.client_piece(client), "GET", target, "1.1", range_, request_id, agent, b"https://player/x",
             status, 1234, 1_700_000_000.25, 0.000125, of, reason)


def test_json_line_has_every_field_and_survives_hostile_headers(tmp_path: Path) -> None:
    log, _, _ = _log(tmp_path / "a.log")
    _line(log, target=b"/t/a.mp4?e=1&rid=play-7f3a&s=x", range_='bytes=0-1"\\\x01\xe9')
    _line(log, client="2001:db8:1:2::5", request_id="hdr-1", of=None, status=404, reason="not-held")
    log.flush()
    first, second = [json.loads(x) for x in (tmp_path / "a.log").read_text().splitlines()]
    assert {k: v for k, v in first.items() if k not in ("ts", "ms")} == {
        "event": "request", "worker": 3, "client": "192.0.2.7", "prefix": "192.0.2.0/24", "status": 206,
        "bytes": 1234, "method": "GET", "request_id": "play-7f3a", "range": 'bytes=0-1"\\\x01\xe9',
        "key": "t/a.mp4", "tier": "ssd"}
    assert (first["ts"], first["ms"]) == (1_700_000_000.25, 0.125)
    assert (second["client"], second["prefix"], second["request_id"], second["reason"]) == (
        "2001:db8:1:2::5", "2001:db8:1::/48", "hdr-1", "not-held")
    assert "key" not in second and "range" not in second


def test_combined_line_is_nginx_s_with_the_request_id_and_prefix_and_no_token(tmp_path: Path) -> None:
    log, _, _ = _log(tmp_path / "a.log", fmt="combined")
    _line(log, target=b"/t/a.mp4?e=1&k=k1&rid=r-1&s=SECRET", agent=b'curl "8"\x7f')
    _line(log, target=b"", request_id=None)
    log.flush()
    first, second = (tmp_path / "a.log").read_text().splitlines()
    stamp = r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]"
    assert re.fullmatch(rf'192\.0\.2\.7 - - {stamp} "GET /t/a\.mp4 HTTP/1\.1" 206 1234 "https://player/x" '
                        r'"curl \\x228\\x22\\x7F" "r-1" "192\.0\.2\.0/24"', first), first
    assert "SECRET" not in first
    assert re.fullmatch(rf'192\.0\.2\.7 - - {stamp} "GET - HTTP/1\.1" 206 1234 "https://player/x" "-" "-" '
                        r'"192\.0\.2\.0/24"', second), second


@pytest.mark.parametrize("fmt", ["json", "combined"])
@pytest.mark.parametrize("target, range_, status, agent", [
    (b"/t/a.mp4?e=1&s=x", "bytes=0-99", 206, None),
    (b"/t/a.mp4?e=1&rid=play-7f3a&s=x", "bytes=-5", 206, b"ExoPlayer/2.19"),
    (b"/t/a.mp4?e=1&rid=&s=x", "bytes=100-", 206, None),  # `rid=` without an id: none logged
    (b"/t/a.mp4?grid=1&s=x", None, 200, b'quote " in agent'),
], ids=["range", "rid-suffix", "empty-rid", "whole"])
def test_the_hot_path_s_entry_writes_the_general_line(tmp_path: Path, fmt: str, target: bytes, range_: str | None,
                                                      status: int, agent: bytes | None) -> None:
    general, _, _ = _log(tmp_path / "general.log", fmt)
    hot, _, _ = _log(tmp_path / "hot.log", fmt)
    for now, seconds in ((1_700_000_000.25, 0.000125), (1_700_000_000.2509, 0.0123456), (1_700_000_001.0, 2.5)):
        general.line(general.client_piece("192.0.2.7"), "GET", target, "1.1", range_, None, agent,
                     b"https://player/x", status, 1234, now, seconds, _OF, None)
        hot.hit(hot.client_piece("192.0.2.7"), target, range_, status, 1234, now, seconds, _OF, agent,
                b"https://player/x")
    assert hot.lines == general.lines and len(hot.lines) == 3


def test_lines_wait_in_the_buffer_until_it_is_full_or_flushed(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log, _, _ = _log(path, buffer_bytes=2000)
    _line(log)
    one = log.size
    while log.size + one < 2000:
        _line(log)
    assert path.read_bytes() == b""  # below the threshold: nothing written yet
    held = len(log.lines)
    _line(log)  # reaches it: one write of every line
    assert len(path.read_bytes().splitlines()) == held + 1 and log.lines == []
    _line(log)
    log.flush()
    assert len(path.read_bytes().splitlines()) == held + 2


def test_reopen_writes_the_held_lines_to_the_renamed_file_then_opens_the_path(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    log, _, events = _log(path)
    _line(log, request_id="before")
    path.rename(tmp_path / "a.log.1")
    log.reopen()
    _line(log, request_id="after")
    log.close()
    assert [json.loads(x)["request_id"] for x in (tmp_path / "a.log.1").read_text().splitlines()] == ["before"]
    assert [json.loads(x)["request_id"] for x in path.read_text().splitlines()] == ["after"]
    assert events.names() == ["access-log-reopened"]


def test_a_reopen_that_fails_keeps_the_old_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log, _, events = _log(logs / "a.log")
    logs.rename(tmp_path / "gone")  # the directory itself went away
    log.reopen()
    _line(log)
    log.close()
    assert events.names() == ["access-log-reopen-failed"]
    assert len((tmp_path / "gone" / "a.log").read_text().splitlines()) == 1


def test_a_failing_write_is_counted_and_reported_once(tmp_path: Path) -> None:
    log, metrics, events = _log(Path("/dev/full"), buffer_bytes=0)  # every write: ENOSPC
    for _ in range(5):
        _line(log)
    assert metrics.v[INDEX["access_log_dropped_lines"]] == 5
    assert metrics.v[INDEX["access_log_dropped_bytes"]] > 5 * 100
    assert metrics.v[INDEX["access_log_failing"]] == 1
    assert events.names() == ["access-log-write-failed"]
    assert "No space left" in events.events[0][1]["error"]
    log.close()
    assert metrics.v[INDEX["access_log_failing"]] == 0


def test_a_log_that_cannot_be_opened_counts_its_lines_and_opens_once_it_can(tmp_path: Path) -> None:
    path = tmp_path / "later" / "a.log"
    log, metrics, events = _log(path, buffer_bytes=0)
    _line(log)
    assert metrics.v[INDEX["access_log_dropped_lines"]] == 1 and metrics.v[INDEX["access_log_failing"]] == 1
    path.parent.mkdir()
    _line(log)
    assert len(path.read_text().splitlines()) == 1 and metrics.v[INDEX["access_log_failing"]] == 0
    assert events.names() == ["access-log-open-failed", "access-log-recovered"]


def test_a_short_write_tears_one_line_only_and_recovery_is_reported(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.log"
    log, metrics, events = _log(path, buffer_bytes=1 << 20)
    real_write = os.write
    calls = {"n": 0}

    def disk_fills(fd: int, data: Any) -> int:  # the first write gets half in, then the disk is full
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:len(data) // 2 + 7]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(accesslog.os, "write", disk_fills)
    for i in range(10):
        _line(log, request_id=f"lost-{i}")
    log.flush()
    dropped = metrics.v[INDEX["access_log_dropped_lines"]]
    assert 0 < dropped < 10 and log.torn
    monkeypatch.setattr(accesslog.os, "write", real_write)
    for i in range(3):
        _line(log, request_id=f"kept-{i}")
    log.flush()
    lines = path.read_text().splitlines()
    whole = [json.loads(x)["request_id"] for x in lines[:-4]]
    assert whole == [f"lost-{i}" for i in range(int(10 - dropped))]  # the written ones, whole and in order
    with pytest.raises(ValueError):
        json.loads(lines[-4])  # the torn one stands alone on its line
    assert [json.loads(x)["request_id"] for x in lines[-3:]] == ["kept-0", "kept-1", "kept-2"]
    assert events.names() == ["access-log-write-failed", "access-log-recovered"]
    assert metrics.v[INDEX["access_log_failing"]] == 0


def test_lines_to_a_pipe_go_in_pieces_cut_at_line_ends() -> None:
    data = b"".join(b"%05d %s\n" % (i, b"x" * (i % 300)) for i in range(400))
    cuts, start = [], 0
    while start < len(data):
        end = accesslog._cut(data, start)
        assert end - start <= accesslog._PIPE_BUF and data[end - 1:end] == b"\n"
        cuts.append(data[start:end])
        start = end
    assert b"".join(cuts) == data and len(cuts) > 1
    long_line = b"y" * 5000 + b"\n"
    assert accesslog._cut(long_line + b"z\n", 0) == len(long_line)  # a longer line goes whole


# -- real appliances ---------------------------------------------------------------------------------

def _configure(app: Any, **http: Any) -> None:
    text = app.config_path.read_text()
    lines = "".join(f"{k} = {json.dumps(str(v) if isinstance(v, Path) else v)}\n" for k, v in http.items())
    app.config_path.write_text(text.replace("[http]\n", "[http]\n" + lines, 1))


def _start(make_appliance: Any, workers: int = 1, files: dict[str, bytes] | None = None,
           **http: Any) -> tuple[Any, Path]:
    app = make_appliance(workers=workers, start=False)
    log_path = app.root / "logs" / "access.log"
    log_path.parent.mkdir()
    _configure(app, access_log=log_path, **http)
    for key, data in {KEY: DATA, **(files or {})}.items():
        app.put(data, key)
    app.start()
    return app, log_path


class Client:
    """One keep-alive connection asking for 1-byte ranges whose offset says who asked and when;
    every `id_every`-th request carries an X-Request-Id (the general path, not the fast one)."""

    def __init__(self, app: Any, number: int, id_every: int = 7) -> None:
        self.app, self.number, self.id_every = app, number, id_every
        self.target = app.path_and_query(KEY, client="127.0.0.1")
        self.conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
        self.received: list[int] = []  # sequence numbers answered in full
        self.seq = 0

    def one(self) -> bool:
        seq, self.seq = self.seq, self.seq + 1
        offset = self.number * STRIDE + seq
        headers = {"Range": f"bytes={offset}-{offset}", "User-Agent": "al-test/1.0"}
        if seq % self.id_every == 0:
            headers["X-Request-Id"] = f"c{self.number}-{seq}"
        try:
            self.conn.request("GET", self.target, headers=headers)
            resp = self.conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # the server closed it (drain): the next request reconnects
            return False
        assert (resp.status, body) == (206, DATA[offset:offset + 1])
        self.received.append(seq)
        return True

    def run(self, count: int) -> None:
        for _ in range(count):
            self.one()


def _logged(log_path: Path, by_worker: bool = False) -> dict[Any, list[int]]:
    """Sequence numbers per client (or per client and worker), in the order of the file; every line
    must be whole JSON."""
    seen: dict[Any, list[int]] = {}
    for text in log_path.read_text().splitlines():
        line = json.loads(text)
        assert line["event"] == "request" and line["status"] == 206 and line["key"] == KEY, line
        assert line["client"] == "127.0.0.1" and line["prefix"] == "127.0.0.0/24", line
        offset = int(line["range"].split("=")[1].split("-")[0])
        conn, seq = divmod(offset, STRIDE)
        if seq % 7 == 0:
            assert line["request_id"] == f"c{conn}-{seq}", line
        seen.setdefault((conn, line["worker"]) if by_worker else conn, []).append(seq)
    return seen


def _check_nothing_lost(log_path: Path, clients: list[Client]) -> None:
    """Every answer logged, once; in order within each worker's lines. (A client that reconnects
    during a drain may land on another worker, whose buffer may reach the file first: nginx's
    per-worker buffers order lines the same way.)"""
    seen = _logged(log_path)
    for c in clients:
        logged = seen.get(c.number, [])
        assert set(c.received) <= set(logged) and len(set(logged)) == len(logged)
    for seqs in _logged(log_path, by_worker=True).values():
        assert seqs == sorted(seqs)


def _parallel(clients: list[Client], count: int) -> None:
    threads = [threading.Thread(target=c.run, args=(count,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_lines_are_complete_and_in_order_under_load(make_appliance: Any) -> None:
    # A small buffer: two workers write many times while eight connections keep them busy.
    app, log_path = _start(make_appliance, workers=2, access_log_buffer_bytes=4096)
    clients = [Client(app, n) for n in range(8)]
    _parallel(clients, 400)
    assert app.stop() == 0
    seen = _logged(log_path)
    for c in clients:
        assert c.received == list(range(400))
        assert seen[c.number] == c.received  # every answer logged once, in the order asked


def _wait_event(app: Any, event: str, count: int = 1, **match: Any) -> list[dict]:
    found: list[dict] = []

    def enough() -> bool:
        found[:] = [e for e in app.log_events(event) if all(e.get(k) == v for k, v in match.items())]
        return len(found) >= count

    app.wait_for(enough, timeout=60, what=f"{count} {event} event(s)")
    return found


def _load_until(clients: list[Client], stop: threading.Event) -> list[threading.Thread]:
    def loop(c: Client) -> None:
        while not stop.is_set() and c.seq < STRIDE - 1:
            c.one()
    threads = [threading.Thread(target=loop, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    return threads


def _answered(clients: list[Client]) -> int:
    return sum(len(c.received) for c in clients)


def test_nothing_is_lost_on_sigterm_drain(make_appliance: Any) -> None:
    # Nothing is written before the stop: every line is still in the workers' buffers when SIGTERM comes.
    app, log_path = _start(make_appliance, workers=2, access_log_buffer_bytes=16 << 20, access_log_flush_s=3600)
    clients, stop = [Client(app, n) for n in range(6)], threading.Event()
    threads = _load_until(clients, stop)
    app.wait_for(lambda: _answered(clients) >= 600, timeout=60, what="600 answers")
    assert log_path.read_bytes() == b""
    app.proc.send_signal(signal.SIGTERM)  # while the clients keep asking
    assert app.proc.wait(60) == 0
    stop.set()
    for t in threads:
        t.join()
    _check_nothing_lost(log_path, clients)


def test_nothing_is_lost_on_sighup_reload(make_appliance: Any) -> None:
    app, log_path = _start(make_appliance, workers=1, access_log_buffer_bytes=16 << 20, access_log_flush_s=3600)
    clients, stop = [Client(app, n) for n in range(4)], threading.Event()
    threads = _load_until(clients, stop)
    app.wait_for(lambda: _answered(clients) >= 300, timeout=60, what="300 answers")
    before = {c.number: list(c.received) for c in clients}
    text = app.config_path.read_text()
    app.config_path.write_text(text.replace("drain_timeout_s = 10.0", "drain_timeout_s = 11.0"))  # a new generation
    app.proc.send_signal(signal.SIGHUP)
    _wait_event(app, "reloaded", restarted_workers=True)  # the old generation has drained and exited
    seen = _logged(log_path)
    for c in clients:
        assert set(before[c.number]) <= set(seen.get(c.number, []))  # written by the old workers on their way out
    answered = _answered(clients)
    app.wait_for(lambda: _answered(clients) >= answered + 300, timeout=60, what="300 answers more")
    stop.set()
    for t in threads:
        t.join()
    assert app.stop() == 0
    _check_nothing_lost(log_path, clients)


def test_sigusr1_reopens_the_log_after_a_rename(make_appliance: Any) -> None:
    app, log_path = _start(make_appliance, workers=2, access_log_buffer_bytes=16 << 20, access_log_flush_s=3600)
    clients = [Client(app, n) for n in range(4)]
    _parallel(clients, 50)
    log_path.rename(log_path.with_name("access.log.1"))  # logrotate's rename; the lines are still buffered
    app.proc.send_signal(signal.SIGUSR1)
    _wait_event(app, "access-log-reopened", count=2)  # each worker wrote its buffer to the old file, reopened
    for c in clients:
        c.conn.close()  # new connections: both workers get some
    _parallel(clients, 50)
    assert app.stop() == 0
    old, new = _logged(log_path.with_name("access.log.1")), _logged(log_path)
    for c in clients:
        assert old[c.number] == list(range(50)) and new[c.number] == list(range(50, 100))
    assert app.proc.returncode == 0


def test_a_full_log_disk_stops_nothing_and_is_counted(make_appliance: Any, tiny_fs: Any) -> None:
    disk = tiny_fs("logdisk", 64 * 1024)  # skips unless root (mounts a tmpfs)
    app = make_appliance(workers=1, start=False)
    _configure(app, access_log=disk / "access.log", access_log_buffer_bytes=0)
    app.put(DATA, KEY)
    app.start()
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:  # fill the disk to the last page
        try:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    client = Client(app, 0, id_every=1)
    client.run(200)
    assert client.received == list(range(200))  # served, every one
    # A line is written just after its response is sent: wait for the last one's count.
    app.wait_for(lambda: app.metric("oca_access_log_dropped_lines_total") == 200, what="200 dropped lines")
    assert app.metric("oca_access_log_dropped_bytes_total") > 200 * 100
    assert app.metric("oca_access_log_failing") == 1
    health = app.health()
    assert health["status"] == "degraded" and "access-log" in health["degraded"] and health["accepting"]
    assert health["access_log"] == {"failing_workers": 1, "dropped_lines": 200,
                                    "dropped_bytes": int(app.metric("oca_access_log_dropped_bytes_total"))}
    assert len(app.log_events("access-log-write-failed")) == 1
    filler.unlink()  # room again: the next line is written and health recovers
    client.run(1)
    app.wait_for(lambda: app.metric("oca_access_log_failing") == 0, what="the log writing again")
    assert [json.loads(x)["request_id"] for x in (disk / "access.log").read_text().splitlines()] == ["c0-200"]
    health = app.health()
    assert health["status"] == "ok" and "access-log" not in health["degraded"]
    assert app.metric("oca_access_log_failing") == 0 and app.metric("oca_access_log_dropped_lines_total") == 200


def test_combined_format_from_a_real_appliance(make_appliance: Any) -> None:
    app, log_path = _start(make_appliance, access_log_format="combined")
    client = Client(app, 1, id_every=2)
    client.run(4)
    assert app.stop() == 0
    lines = log_path.read_text().splitlines()
    assert len(lines) == 4
    for seq, line in enumerate(lines):
        offset = STRIDE + seq
        rid = f"c1-{seq}" if seq % 2 == 0 else "-"
        assert re.fullmatch(r'127\.0\.0\.1 - - \[[^\]]+\] "GET /al/file\.mp4 HTTP/1\.1" 206 1 "-" "al-test/1\.0" '
                            rf'"{rid}" "127\.0\.0\.0/24"', line), (offset, line)


def test_a_response_cut_short_is_logged_with_the_bytes_that_went_out(make_appliance: Any) -> None:
    big = os.urandom(32 << 20)  # far more than the socket buffers between us hold
    app, log_path = _start(make_appliance, files={"al/big.mp4": big})
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", app.port))
    sock.sendall(b"GET " + app.path_and_query("al/big.mp4").encode() + b" HTTP/1.1\r\nHost: x\r\n"
                 b"X-Request-Id: cut-1\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    sock.close()  # the player went away mid-body
    app.wait_for(lambda: app.metric("oca_client_aborts_total") >= 1, what="the abort")
    assert app.stop() == 0
    lines = [json.loads(x) for x in log_path.read_text().splitlines()]
    cut = [x for x in lines if x.get("request_id") == "cut-1"]
    assert len(cut) == 1 and cut[0]["status"] == 200 and cut[0]["reason"] == "cut-short", cut
    assert 0 < cut[0]["bytes"] < len(big) and cut[0]["key"] == "al/big.mp4"
