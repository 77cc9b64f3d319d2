"""Pull-through admission: when steering sends a site's clients to the site's own appliance for a file
the site lacks, so that appliance fetches it (pull-through) and the next plays are local hits.

Open Connect's way is no pull-through: a content miss goes to another site and fill brings the file at
night. On traces with many launches a day and fast-changing popularity that loses to plain LRU
pull-through (loadtests/offload_sim.py); pulling *every* miss spends upstream on files asked for once.
The middle road, chosen by `offload_sim.py --tune`: a site pulls a file on its `misses_to_admit`-th
miss within `window_s`. Until then its clients go to a site that holds the file; from that miss on
(and for `hold_s` after it, until the appliance's inventory shows the file) they go to the site's
rendezvous-first appliance that reports pull-through, with the holders after it as failover.

Steering replicas count on their own (clients spread over them, so admission comes a little later than
the n-th miss fleet-wide: acceptable, it is a threshold against one-off requests, not a quota).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from contracts.ids import FileKey, SiteId


@dataclass(frozen=True)
class PullPolicy:
    """When a site pulls a file it lacks into the room the plan leaves: on the `misses_to_admit`-th
    request for it within `window_s`. 1 is plain pull-through; 8 (offload_sim --tune) keeps its hit
    ratio for a few % more daytime upstream instead of ~90%: a file asked for once or twice is not
    fetched whole to serve a fraction of it, nor churns the room."""

    misses_to_admit: int = 8
    window_s: float = 86400.0

    def __post_init__(self) -> None:
        if self.misses_to_admit < 1:
            raise ValueError("misses_to_admit: must be at least 1")
        if self.window_s <= 0:
            raise ValueError("window_s: must be positive")


@dataclass(frozen=True, slots=True)
class Admission:
    admit: bool
    misses: tuple[float, ...]  # the misses to remember for the file (times, oldest first); () once admitted


def admit_on_miss(previous: tuple[float, ...], now_s: float, policy: PullPolicy) -> Admission:
    """A miss at `now_s` for a file the site lacks: pull it in if this makes `misses_to_admit` misses
    within `window_s` (older ones are forgotten). The caller keeps `misses` for the next one."""
    recent = tuple(t for t in previous if now_s - t < policy.window_s) + (now_s,)
    if len(recent) >= policy.misses_to_admit:
        return Admission(True, ())
    return Admission(False, recent[-(policy.misses_to_admit - 1):])


class MissLedger:
    """Each (site, file)'s recent misses and admissions, in bounded memory: at most `max_entries`
    pairs, the least recently missed forgotten first (a forgotten pair starts counting again)."""

    def __init__(self, policy: PullPolicy, hold_s: float, max_entries: int) -> None:
        if hold_s < 0 or max_entries < 1:
            raise ValueError("hold_s must be >= 0 and max_entries >= 1")
        self.policy, self.hold_s, self.max_entries = policy, hold_s, max_entries
        self._misses: OrderedDict[tuple[SiteId, FileKey], tuple[float, ...]] = OrderedDict()
        self._admitted: OrderedDict[tuple[SiteId, FileKey], float] = OrderedDict()  # -> until

    def miss(self, site: SiteId, key: FileKey, now_s: float) -> bool:
        """Record a content miss of `site` for `key`; True if the site should pull it now (this miss
        is the n-th, or an admission less than `hold_s` old is still waiting for the inventory)."""
        pair = (site, key)
        until = self._admitted.get(pair)
        if until is not None:
            if now_s < until:
                return True
            del self._admitted[pair]
        verdict = admit_on_miss(self._misses.pop(pair, ()), now_s, self.policy)
        if verdict.admit:
            self._admitted[pair] = now_s + self.hold_s
            _bound(self._admitted, self.max_entries)
            return True
        self._misses[pair] = verdict.misses
        _bound(self._misses, self.max_entries)
        return False

    def __len__(self) -> int:
        return len(self._misses) + len(self._admitted)


def _bound(table: OrderedDict, cap: int) -> None:
    while len(table) > cap:
        table.popitem(last=False)
