"""The structured log of steering decisions: one JSON line per answer (what was asked from which
client prefix, how it was located, the outcome, the first appliance), in the same shape as the other
log lines (contracts.logs: `ts`, `level`, `service`, `logger`, `event`) and on the same stream, stdout.
Lines are kept in memory and written in one call per flush (the server flushes every quarter second
and at shutdown): going through `logging` with a write per line cost more than the decision itself."""
from __future__ import annotations

import sys
import time
from typing import TextIO

_LOGGER = "steering.decisions"


class DecisionLog:
    def __init__(self, stream: TextIO | None = None, max_pending: int = 100_000) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.max_pending = max_pending  # beyond it lines are dropped (and counted), never memory
        self.pending: list[tuple[float, str, str, str, str, str, str | None, int, str | None]] = []
        self.dropped = 0

    def add(self, file: str, client_prefix: str, method: str, outcome: str, site: str,
            first: str | None, n: int, request_id: str | None = None) -> None:
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending.append((time.time(), file, client_prefix, method, outcome, site, first, n, request_id))

    def flush(self) -> None:
        if not self.pending:
            return
        lines, self.pending = self.pending, []
        # Formatted by hand, ~3x cheaper than json.dumps: every value has a grammar without quotes or
        # backslashes (file keys, ids and request ids are validated, the prefix is ipaddress's text,
        # the rest enums).
        text = "".join(
            f'{{"ts":{ts:.3f},"level":"info","service":"steering","logger":"{_LOGGER}","event":"steer","file":"{f}",'
            f'"client_prefix":"{p}","method":"{m}","outcome":"{o}","site":"{s}",'
            f'"first":{"null" if a is None else chr(34) + a + chr(34)},"n":{n}'
            f'{"" if r is None else ",{0}request_id{0}:{0}{1}{0}".format(chr(34), r)}}}\n'
            for ts, f, p, m, o, s, a, n, r in lines)
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or full log pipe must not take steering down
            self.dropped += len(lines)
