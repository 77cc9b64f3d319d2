"""The client loop the reload tests keep running while they send SIGHUPs: one thread, one
requests.Session, one request after another until the `with` ends, or at most `most` of them (bounded:
a hung reload cannot make it run forever). Every outcome is kept, a RequestException as itself."""
from __future__ import annotations

import threading
from typing import Callable

import requests


class ClientLoop:
    """`request(session, i)` for i = 0, 1, ... in a thread while the `with` lasts; what each returned
    (or the RequestException it raised) in `outcomes`. Leaving the `with` stops it and waits up to
    `join_s` for the request in flight."""

    def __init__(self, request: Callable[[requests.Session, int], object], most: int, join_s: float = 30.0) -> None:
        self.request = request
        self.most = most
        self.join_s = join_s
        self.outcomes: list[object] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with requests.Session() as s:
            for i in range(self.most):
                if self._stop.is_set():
                    return
                try:
                    self.outcomes.append(self.request(s, i))
                except requests.RequestException as exc:
                    self.outcomes.append(exc)

    def __enter__(self) -> "ClientLoop":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.join_s)
