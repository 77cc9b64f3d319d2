"""One serving worker process: its own SO_REUSEPORT listening socket, uvloop, the hot-path protocol
and a few background chores — follow the index's change log, flush the popularity tally, tick the
Date header, reload keys when the key file changes. SIGTERM drains: stop accepting, let every
response in flight finish (up to `drain_timeout_s`), close idle connections, exit. SIGHUP reloads
the keys. SIGINT is left to the supervisor, which turns Ctrl-C into an orderly SIGTERM.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import os
import resource
import signal
import socket
import sys
import time
from pathlib import Path

import uvloop

from contracts.keys import load_keyring
from contracts.tomlconf import ConfigError
from oca.config import OcaConfig
from oca.http.files import OpenFiles, cors_headers
from oca.http.protocol import Connection
from oca.http.state import ServerState
from oca.metrics import WorkerMetrics
from oca.store.index import Index

INDEX_POLL_S = 1.0
HITS_FLUSH_S = 2.0
SWEEP_S = 0.5


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
    def __init__(self, config: OcaConfig, slot: int, metrics_path: Path | None, ready=None) -> None:
        self.ready = ready
        self.config = config
        self.slot = slot
        self.metrics_path = metrics_path
        self.stop = asyncio.Event()

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
            on_disk_failed=self._disk_failed, on_file_missing=self._file_missing, worker=self.slot)
        if config.pull_through.enabled:
            self._start_puller()
        sock = listening_socket(config.http.listen, config.http.port)
        server = await loop.create_server(lambda: Connection(self.state), sock=sock, backlog=4096)
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_keys)
        chores = [asyncio.create_task(c()) for c in (self._follow_index, self._flush_hits, self._tick,
                                                     self._sweep)]
        self.state.log_event("worker-ready", port=sock.getsockname()[1], files=len(entries))
        if self.ready is not None:
            self.ready.set()
        await self.stop.wait()
        server.close()
        await self._drain()
        for chore in chores:
            chore.cancel()
        await self._flush_once()
        if self.state.puller is not None:
            await self.state.puller.close()
            self.store.close()
        self.state.files.close_all()
        self.state.log_event("worker-stopped")
        self.state.flush_log()
        self.index.close()

    def _start_puller(self) -> None:
        from oca.http.pull import Puller
        from oca.store.store import Store

        state = self.state
        self.store = Store.open(self.config)
        state.puller = Puller(self.config.pull_through, self.store, lambda: state.keys,
                              lambda entry: state.files.apply_changes({entry.key: entry}), state.log_event)
        state.pull_wait_s = self.config.pull_through.wait_s

    async def _drain(self) -> None:
        state = self.state
        state.draining = True
        for conn in list(state.connections):
            conn.drain()
        deadline = time.monotonic() + self.config.http.drain_timeout_s
        while state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(state.connections):
            conn.close()

    async def _follow_index(self) -> None:
        while True:
            await asyncio.sleep(INDEX_POLL_S)
            try:
                changed = await asyncio.to_thread(self.index.changes_since, self.seq)
                if changed is None:  # fell behind the pruned log: start over from a snapshot
                    entries, self.seq = await asyncio.to_thread(self.index.snapshot)
                    self.state.files.replace_all(entries)
                else:
                    changes, self.seq = changed
                    self.state.files.apply_changes(changes)
            except Exception as exc:  # a locked or briefly unavailable index: try again next time
                self.state.log_event("index-poll-failed", error=str(exc))
            self._maybe_reload_keys()

    async def _flush_once(self) -> None:
        hits = self.state.take_hits()
        if hits:
            await asyncio.to_thread(self.index.add_hits, hits, time.time(),
                                    self.config.store.popularity_half_life_s)

    async def _flush_hits(self) -> None:
        while True:
            await asyncio.sleep(HITS_FLUSH_S)
            try:
                await self._flush_once()
            except Exception as exc:
                self.state.log_event("hits-flush-failed", error=str(exc))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0 - time.time() % 1.0)
            self.state.tick()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            self.state.sweep()

    def _maybe_reload_keys(self) -> None:
        mtime = _mtime(self.config.tokens.key_file)
        if mtime != self.keys_mtime:
            self.keys_mtime = mtime
            self._reload_keys()

    def _reload_keys(self) -> None:
        try:
            self.state.keys = load_keyring(self.config.tokens.key_file)
            self.state.log_event("keys-reloaded", key_ids=sorted(self.state.keys.keys))
        except ConfigError as exc:  # keep serving with the keys we have
            self.state.log_event("keys-reload-failed", error=str(exc))

    def _disk_failed(self, disk: str, reason: str) -> None:
        asyncio.get_running_loop().run_in_executor(None, self.index.mark_disk_failed, disk, reason)

    def _file_missing(self, key) -> None:
        asyncio.get_running_loop().run_in_executor(None, self.index.remove, key)


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _die_with_parent() -> None:
    """Drain (SIGTERM) when the fork server that made us exits — it exits with the supervisor — so
    a supervisor killed outright leaves no orphan serving with stale state."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def raise_fd_limit() -> int:
    """Each connection holds two descriptors (the transport's and our dup) and open files are kept
    open, so the default soft limit of 1024 would refuse work long before the CPU is busy."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def worker_main(config: OcaConfig, slot: int, metrics_path: Path | None, ready=None) -> None:
    """Entry point of a worker process (multiprocessing spawn target); `ready` is an Event set
    once the worker accepts connections."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    raise_fd_limit()
    try:
        uvloop.run(Worker(config, slot, metrics_path, ready).run())
    except Exception as exc:
        print(json.dumps({"event": "worker-crashed", "worker": slot, "error": repr(exc)}), file=sys.stderr)
        raise SystemExit(1) from None
