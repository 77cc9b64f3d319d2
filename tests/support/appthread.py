"""One real aiohttp server on 127.0.0.1 (an ephemeral port unless given) on an event loop of its own in
a thread: the tests' fake peers and sources and the in-process steering replica all start this way.
`make_app` runs on that loop (an app binds to the loop it is built on); `call` runs a function there
(what the app holds is not thread-safe)."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

from aiohttp import web


class AppThread:
    def __init__(self, make_app: Callable[[], web.Application], port: int = 0, shutdown_timeout: float = 1) -> None:
        self._make_app = make_app
        self._want_port = port
        self._shutdown_timeout = shutdown_timeout
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "AppThread":
        self._thread.start()
        if not self._ready.wait(10) or self._failed is not None:
            raise RuntimeError(f"{type(self).__name__} did not start: {self._failed!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on the server's loop and return its result."""
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.app = self._make_app()
            self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=self._shutdown_timeout)
            self.loop.run_until_complete(self._runner.setup())
            self.loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self._want_port).start())
            self.port = self._runner.addresses[0][1]
        except BaseException as exc:  # reported by __enter__, not lost in the thread
            self._failed = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
