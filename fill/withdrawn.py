"""What `fill plan` must leave out: titles and versions withdrawn fleet-wide (contracts.withdrawals),
read from the control store the planner writes its manifests to — the log steering's replicas write
and read. A file under a withdrawn title or version is in no manifest, so every agent deletes its copy
once the rest of its set is in place (oca.fill.core.diff) and none fetches it again.

The log is read whole each run (events are small and rare). A store that cannot be listed or read
fails the run (nothing written: a plan that might put withdrawn files back is worse than none); an
event object that does not decode is skipped and reported, like a broken catalog entry.
"""
from __future__ import annotations

from typing import Any

from contracts.withdrawals import PREFIX, Event, WithdrawalError, Withdrawals, decode_event, fold


def read_withdrawals(backend: Any) -> tuple[Withdrawals, dict[str, str]]:
    """The folded log and, per object skipped, why. Backend errors propagate."""
    from origin.core.errors import ObjectNotFound

    events: list[Event] = []
    rejected: dict[str, str] = {}
    for info in backend.list(PREFIX):
        try:
            events.append(decode_event(backend.get_bytes(info.key), info.key))
        except ObjectNotFound:
            continue
        except WithdrawalError as exc:
            rejected[info.key] = str(exc)[:300]
    return fold(events), rejected


__all__ = ["read_withdrawals"]
