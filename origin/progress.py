"""Progress for long steps (hashing, encoding, uploading): tqdm bars on stderr when it is a terminal,
nothing otherwise (logs stay readable); notes are always printed. Library callers pass `QUIET`."""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

from tqdm import tqdm


class Reporter:
    def __init__(self, bars: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.bars = self.stream.isatty() if bars is None else bars

    @contextmanager
    def bar(self, desc: str, total: float, unit: str = "B") -> Iterator[Callable[[float], None]]:
        """A bar of `total` units; yields a thread-safe `update(n)`."""
        if not self.bars:
            yield lambda n: None
            return
        lock = threading.Lock()
        scale = unit == "B"
        with tqdm(total=total, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
                  file=self.stream, leave=True, dynamic_ncols=True,
                  bar_format=None if scale else "{l_bar}{bar}| {n:.1f}/{total:.1f}s [{elapsed}<{remaining}]") as bar:
            def update(n: float) -> None:
                with lock:
                    bar.update(n)
            yield update

    def note(self, text: str) -> None:
        print(f"origin: {text}", file=self.stream, flush=True)


class _Quiet(Reporter):
    def __init__(self) -> None:
        super().__init__(bars=False)

    def note(self, text: str) -> None:
        pass


QUIET = _Quiet()
