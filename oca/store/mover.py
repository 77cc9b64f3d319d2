"""The tier mover: every `mover.interval_s`, ask `plan_moves` which files to swap between SSD and HDD
by heat, and perform the moves through `Store.move` (copy, verify, publish, then unlink the original,
so responses in flight keep their fd). Bytes copied per run stay within io_budget_bps × interval_s,
and copies are paced to io_budget_bps so serving never sees a burst. Runs in a thread: all of it is
blocking disk and SQLite work."""
from __future__ import annotations

import logging
from typing import Callable

from oca.config import Tier
from oca.core.placement import Move, plan_moves
from oca.store.errors import HashMismatch, NotFound, StoreError, WriteInProgress
from oca.store.store import Store

log = logging.getLogger("oca.store.mover")


def run_mover_once(store: Store, now: float, budget_bytes: int, rate_bps: float | None = None,
                   should_stop: Callable[[], bool] | None = None) -> list[Move]:
    """Plan and perform one round of moves; returns the moves done."""
    config = store.config
    if not config.disks_of(Tier.SSD) or not config.disks_of(Tier.HDD):
        return []
    capacity, used = store.tier_space(Tier.SSD)
    if capacity <= 0:
        return []
    plan = plan_moves(store.file_stats(now), capacity, used, budget_bytes, config.mover.ssd_high_water)
    done: list[Move] = []
    room_missing = False  # a demotion failed: the promotion it made room for must wait
    for move in plan:
        if should_stop is not None and should_stop():
            break
        promotion = move.dst_tier is Tier.SSD
        if promotion and room_missing:
            room_missing = False  # skip it; the next group of moves starts afresh
            continue
        if _perform(store, move, rate_bps):
            done.append(move)
        elif not promotion:
            room_missing = True
    return done


def _perform(store: Store, move: Move, rate_bps: float | None) -> bool:
    try:
        store.move(move.key, move.dst_tier, rate_bps)
        return True
    except NotFound:
        return False  # evicted or removed since the plan
    except WriteInProgress:
        return False  # another process (fill, pull-through) is rewriting it: the next round decides
    except HashMismatch as exc:
        # The original no longer matches its indexed hash: corrupt bytes must not be served.
        log.error("removing %s: %s", move.key, exc)
        try:
            store.remove(move.key)
        except WriteInProgress:
            pass  # someone is writing a fresh copy right now: that one replaces the corrupt bytes
        return False
    except StoreError as exc:
        log.warning("moving %s to %s failed: %s", move.key, move.dst_tier.value, exc)
        return False
