"""Reading the withdrawal log (contracts.withdrawals: one immutable object per event under
`withdrawals/` in the control store) from a store backend. Steering's replicas poll it to refuse plays,
`fill plan` reads it once per run to leave the files out of every manifest, and `origin serve` polls it
to refuse fills of them: one reader, so the three agree on what a skipped object is.

Events never change, so each object is read once and a reader kept between polls reads only what is
new. An object whose key is not an event's, or whose body does not decode, is skipped with its reason
(reported once, never read again). Backend errors propagate: the caller keeps its last good state."""
from __future__ import annotations

from typing import Any

from contracts.withdrawals import PREFIX, Event, WithdrawalError, Withdrawals, decode_event, fold, is_event_key
from origin.core.errors import ObjectNotFound


class LogReader:
    def __init__(self) -> None:
        self.events: dict[str, Event] = {}  # by object key
        self.rejected: dict[str, str] = {}  # object key -> why it was skipped

    def read_new(self, backend: Any) -> tuple[dict[str, Event], dict[str, str]]:
        """Blocking (run it in a thread): list the log, read the objects not seen yet, keep them, and
        return (new events, new rejections)."""
        fresh: dict[str, Event] = {}
        rejected: dict[str, str] = {}
        for info in backend.list(PREFIX):
            key = info.key
            if key in self.events or key in self.rejected:
                continue
            if not is_event_key(key):
                rejected[key] = "not an event's key"
                continue
            try:
                fresh[key] = decode_event(backend.get_bytes(key), key)
            except ObjectNotFound:
                continue  # deleted by hand between the listing and the read
            except WithdrawalError as exc:
                rejected[key] = str(exc)[:300]
        self.events.update(fresh)
        self.rejected.update(rejected)
        return fresh, rejected

    def withdrawals(self) -> Withdrawals:
        return fold(self.events.values())


def read_withdrawals(backend: Any) -> tuple[Withdrawals, dict[str, str]]:
    """The whole log at once: the folded state and, per object skipped, why. Backend errors propagate."""
    reader = LogReader()
    _, rejected = reader.read_new(backend)
    return reader.withdrawals(), rejected


__all__ = ["LogReader", "read_withdrawals"]
