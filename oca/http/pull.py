"""Pull-through, off by default: a miss is normally a fast 404 and the player moves to the next URL
steering gave it (Open Connect's way; fill moves bytes at night). Turned on (`[pull_through]`), a
worker asked for a file it lacks fetches the whole file from the configured parent — another
appliance or the origin, authenticated with a fill token — through the store's atomic publish,
and the request waits for it up to `wait_s`. A longer fetch goes on in the background while the
request gets the 404; the next request for the file is a hit. One fetch per key per worker; a key
that just failed is not retried for `retry_after_s`, so a broken parent cannot be hammered.
"""
from __future__ import annotations

import asyncio
import re
import time
from typing import Callable

import aiohttp

from contracts.ids import FileKey
from contracts.token import Keyring, fill_authorization
from oca.config import PullThroughConfig
from oca.store.errors import WriteInProgress
from oca.store.index import FileEntry
from oca.store.store import Store

_XXH3 = re.compile(r'"([0-9a-f]{32})"')  # an appliance parent's ETag is the content hash
CHUNK = 1 << 20


class PullFailed(Exception):
    pass


class Puller:
    def __init__(self, config: PullThroughConfig, store: Store, keys: Callable[[], Keyring], appliance: str,
                 on_published: Callable[[FileEntry], None], log: Callable[..., None]) -> None:
        self.config = config
        self.store = store
        self.keys = keys  # this appliance's fill keys for the parent: valid there, for us only
        self.appliance = appliance
        self.on_published = on_published
        self.log = log
        self._running: dict[FileKey, asyncio.Task] = {}
        self._failed: dict[FileKey, float] = {}
        self._session: aiohttp.ClientSession | None = None

    def pull(self, key: FileKey) -> asyncio.Future | None:
        """The fetch of `key` (started now or already running), or None while it is in penalty."""
        task = self._running.get(key)
        if task is not None:
            return task
        if time.monotonic() - self._failed.get(key, -1e9) < self.config.retry_after_s:
            return None
        task = asyncio.ensure_future(self._fetch(key))
        self._running[key] = task
        task.add_done_callback(lambda t, k=key: self._done(k, t))
        return task

    def _done(self, key: FileKey, task: asyncio.Task) -> None:
        self._running.pop(key, None)
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, WriteInProgress):  # another worker (or fill) is writing it: it arrives through the index
            self.log("pull-elsewhere", key=key)
        elif exc is not None or task.cancelled():
            self._failed[key] = time.monotonic()
            self.log("pull-failed", key=key, error=str(exc))
        else:
            self.on_published(task.result())
            self.log("pulled", key=key, size=task.result().size)

    async def _fetch(self, key: FileKey) -> FileEntry:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.config.timeout_s, sock_read=self.config.timeout_s))
        url = f"{self.config.parent.rstrip('/')}/{key}"  # type: ignore[union-attr]
        headers = {"Authorization": fill_authorization(self.keys(), int(time.time()) + 3600, self.appliance)}
        async with self._session.get(url, headers=headers) as resp:
            if resp.status != 200 or resp.content_length is None:
                raise PullFailed(f"{url}: parent answered {resp.status}")
            tag = _XXH3.fullmatch(resp.headers.get("ETag", ""))
            pending = await asyncio.to_thread(self.store.begin_write, key, resp.content_length)
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    await asyncio.to_thread(pending.write, chunk)
                return await asyncio.to_thread(pending.commit, tag.group(1) if tag else None)
            except BaseException:
                await asyncio.to_thread(pending.abort)
                raise

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
