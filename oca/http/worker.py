"""One serving worker process: its own SO_REUSEPORT listening socket, uvloop, the hot-path protocol
and a few background chores (supervised: contracts.supervise) — follow the index's change log, flush
the popularity tally, tick the Date header, write the access log's buffer every `access_log_flush_s`,
reload keys when the key file changes. SIGTERM drains: stop accepting, let every response in flight
finish (up to `drain_timeout_s`), close idle connections, write the last access-log lines, exit.
SIGHUP reloads the keys (and writes the access log's buffer); SIGUSR1 reopens the access log file
(logrotate). SIGINT is left to the supervisor, which turns Ctrl-C into an orderly SIGTERM.

A worker never outlives its supervisor: it holds a pidfd of the supervisor process and, the moment
that becomes readable (the supervisor exited, however it died), closes its listener and drains for
at most ORPHAN_DRAIN_S. (PR_SET_PDEATHSIG alone is not enough: our parent is multiprocessing's fork
server, which stays alive as long as any of its children holds its "alive" pipe — and every child
does — so a SIGKILLed supervisor used to leave workers serving with stale keys on its port.)
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from contracts.keys import load_keyring
from contracts.logs import json_line, setup_logging
from contracts.supervise import TaskSupervisor
from contracts.structconf import ConfigError
from oca.config import OcaConfig
from oca.http.files import OpenFiles, cors_headers
from oca.http.protocol import Connection
from oca.http.state import ServerState
from oca.metrics import WorkerMetrics
from oca.store.index import Index

INDEX_POLL_S = 1.0
HITS_FLUSH_S = 2.0
SWEEP_S = 0.5
ORPHAN_DRAIN_S = 1.0  # responses in flight get this long once the supervisor is gone


def listening_socket(host: str, port: int, reuse_port: bool = True, listen: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6 and host == "::":
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, port))
    if listen:
        sock.listen(4096)
    sock.setblocking(False)
    return sock


class Worker:
    def __init__(self, config: OcaConfig, slot: int, metrics_path: Path | None, ready=None,
                 supervisor_fd: int | None = None) -> None:
        self.ready = ready
        self.config = config
        self.slot = slot
        self.metrics_path = metrics_path
        self.supervisor_fd = supervisor_fd  # a pidfd: readable once the supervisor has exited
        self.orphaned = False
        self.stop = asyncio.Event()
        self.tls: Any = None  # oca.http.tls.TlsListener when [tls] is configured

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        self.index = Index.open(config.store.index_path)
        entries, self.seq = await asyncio.to_thread(self.index.snapshot)
        self.keys_mtime = _mtime(config.tokens.key_file)
        files = OpenFiles(entries, config.http.cache_control, cors=cors_headers(config.http.cors_allow_origin))
        self.state = ServerState(
            config.http, load_keyring(config.tokens.key_file), files,
            WorkerMetrics(self.metrics_path, self.slot), loop,
            on_disk_failed=self._disk_failed, on_file_missing=self._file_missing, worker=self.slot,
            lookup=self.index.get, prefix_bits=(config.tokens.client_prefix_v4, config.tokens.client_prefix_v6))
        try:
            await self._serve(loop, entries)
        finally:  # whatever ended the worker, the buffered access-log lines are written
            self.state.close_log()
        self.index.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop, entries: dict) -> None:
        config = self.config
        if config.pull_through.enabled:
            self._start_puller()
        servers = []
        if config.tls is None or config.tls.plain_port:
            sock = listening_socket(config.http.listen, config.http.port)
            servers.append(await loop.create_server(lambda: Connection(self.state), sock=sock, backlog=4096))
        if config.tls is not None:  # HTTPS beside (or instead of) the plain port: oca/http/tls.py
            from oca.http.tls import TlsListener

            self.tls = TlsListener(config.tls, self.state)
            servers.append(await self.tls.serve(loop, listening_socket(config.tls.listen, config.tls.port)))
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        loop.add_signal_handler(signal.SIGUSR1, self.state.reopen_log)
        if self.supervisor_fd is not None:
            loop.add_reader(self.supervisor_fd, self._supervisor_gone)
        metrics = self.state.metrics
        chores = TaskSupervisor("oca_worker", on_failure=lambda task, exc: metrics.add("worker_task_failures"))
        chores.spawn("follow-index", self._follow_index)
        chores.every("flush-hits", HITS_FLUSH_S, self._flush_once)
        chores.spawn("tick", self._tick)
        chores.every("sweep", SWEEP_S, self.state.sweep)
        if self.state.access_log is not None:
            chores.every("flush-access-log", config.http.access_log_flush_s, self.state.flush_log)
        if self.tls is not None:
            chores.every("tls-watch", config.tls.reload_check_s, self.tls.maybe_reload)
        self.state.log_event("worker-ready", port=servers[0].sockets[0].getsockname()[1], files=len(entries),
                             tls=self.tls is not None)
        if self.ready is not None:
            self.ready.set()
        await self.stop.wait()
        for server in servers:
            server.close()
        await self._drain()
        await chores.shutdown()
        await self._flush_once()
        if self.state.puller is not None:
            await self.state.puller.close()
            self.store.close()
        self.state.files.close_all()
        self.state.close_log()
        self.state.log_event("worker-stopped", orphaned=self.orphaned)

    def _supervisor_gone(self) -> None:
        asyncio.get_running_loop().remove_reader(self.supervisor_fd)
        self.orphaned = True
        self.state.log_event("supervisor-gone", action="stop")
        self.stop.set()

    def _start_puller(self) -> None:
        from oca.http.pull import Puller
        from oca.store.store import Store

        state = self.state
        self.store = Store.open(self.config)
        pull_keys = load_keyring(self.config.pull_through.key_file)  # our fill keys for the parent
        state.puller = Puller(self.config.pull_through, self.store, lambda: pull_keys, self.config.appliance_id,
                              lambda entry: state.files.apply_changes({entry.key: entry}), state.log_event)
        state.pull_wait_s = self.config.pull_through.wait_s

    async def _drain(self) -> None:
        state = self.state
        state.draining = True
        for conn in list(state.connections):
            conn.drain()
        grace = min(self.config.http.drain_timeout_s, ORPHAN_DRAIN_S) if self.orphaned else \
            self.config.http.drain_timeout_s
        deadline = time.monotonic() + grace
        while state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(state.connections):
            conn.close()

    async def _follow_index(self) -> None:
        """Apply the index's changes every INDEX_POLL_S; a failure (a locked index) is the
        supervision's to log and retry, resuming from the last applied sequence."""
        while True:
            await asyncio.sleep(INDEX_POLL_S)
            changed = await asyncio.to_thread(self.index.changes_since, self.seq)
            if changed is None:  # fell behind the pruned log: start over from a snapshot
                entries, self.seq = await asyncio.to_thread(self.index.snapshot)
                self.state.files.replace_all(entries)
            else:
                changes, self.seq = changed
                self.state.files.apply_changes(changes)
            self._maybe_reload_keys()

    async def _flush_once(self) -> None:
        hits = self.state.take_hits()
        if hits:
            try:
                await asyncio.to_thread(self.index.add_hits, hits, time.time(),
                                        self.config.store.popularity_half_life_s)
            except BaseException:
                self.state.restore_hits(hits)  # counted next time, not lost with this try
                raise

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0 - time.time() % 1.0)
            self.state.tick()

    def _maybe_reload_keys(self) -> None:
        mtime = _mtime(self.config.tokens.key_file)
        if mtime != self.keys_mtime:
            self.keys_mtime = mtime
            self._reload_keys()

    def _on_hup(self) -> None:
        self.state.flush_log()
        self._reload_keys()
        if self.tls is not None:
            self.tls.reload()  # new certificates for new connections; open ones keep theirs

    def _reload_keys(self) -> None:
        try:
            self.state.keys = load_keyring(self.config.tokens.key_file)
            self.state.log_event("keys-reloaded", key_ids=sorted(self.state.keys.keys))
        except ConfigError as exc:  # keep serving with the keys we have
            self.state.log_event("keys-reload-failed", error=str(exc))

    def _disk_failed(self, disk: str, reason: str) -> None:
        asyncio.get_running_loop().run_in_executor(None, self.index.mark_disk_failed, disk, reason)

    def _file_missing(self, key, disk: str) -> None:
        # Only while the entry still names that disk: a copy published elsewhere stays indexed.
        asyncio.get_running_loop().run_in_executor(None, self.index.remove, key, disk)


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _die_with_parent() -> None:
    """A backstop for the pidfd watch: SIGTERM when the fork server that made us exits."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def watch_supervisor(pid: int | None) -> int | None:
    """A pidfd for the supervisor (None without one); exits at once if it is gone already."""
    if pid is None:
        return None
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        print(json_line("oca", "supervisor-gone", action="exit", supervisor=pid), flush=True)
        raise SystemExit(0) from None


def raise_fd_limit() -> int:
    """Each connection holds two descriptors (the transport's and our dup) and open files are kept
    open, so the default soft limit of 1024 would refuse work long before the CPU is busy."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def worker_main(config: OcaConfig, slot: int, metrics_path: Path | None, ready=None,
                supervisor_pid: int | None = None) -> None:
    """Entry point of a worker process (multiprocessing target); `ready` is an Event set once the
    worker accepts connections; the worker stops when process `supervisor_pid` exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the loop handles it: a rotation never kills a worker
    _die_with_parent()
    supervisor_fd = watch_supervisor(supervisor_pid)
    setup_logging("oca")
    raise_fd_limit()
    try:
        uvloop.run(Worker(config, slot, metrics_path, ready, supervisor_fd).run())
    except Exception as exc:
        print(json_line("oca", "worker-crashed", worker=slot, error=repr(exc)), file=sys.stderr, flush=True)
        raise SystemExit(1) from None
