"""Bandwidth: a token bucket (the cap, e.g. 1.2 Gbit/s) and the budget that makes fill yield to serving.

`take` charges bytes already received and says how long to pause so the average stays under the rate;
the bucket holds at most `burst` bytes of credit, so an idle pause does not turn into a burst. `budget`
lowers the cap while the appliance is busy serving: full rate below `busy_fraction` of its egress
capacity, falling linearly to `floor_fraction` of it at full load — fill never stops entirely (the
window is finite) but serving keeps the machine.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bucket:
    rate_Bps: float  # bytes per second; <= 0: unlimited
    burst_bytes: float
    tokens: float  # may go negative: debt paid by waiting
    t: float


def new_bucket(rate_Bps: float, now: float, burst_s: float = 0.25) -> Bucket:
    burst = max(rate_Bps * burst_s, 1 << 20)
    return Bucket(rate_Bps, burst, burst, now)


def take(b: Bucket, nbytes: int, now: float) -> tuple[Bucket, float]:
    """Charge `nbytes`; return the new bucket and the seconds to wait before going on."""
    if b.rate_Bps <= 0:
        return b, 0.0
    tokens = min(b.burst_bytes, b.tokens + (now - b.t) * b.rate_Bps) - nbytes
    wait = -tokens / b.rate_Bps if tokens < 0 else 0.0
    return Bucket(b.rate_Bps, b.burst_bytes, tokens, max(now, b.t)), wait


def with_rate(b: Bucket, rate_Bps: float, now: float) -> Bucket:
    """The same bucket at another rate (credit accrued so far kept, capped by the new burst)."""
    fresh = new_bucket(rate_Bps, now)
    accrued = min(b.burst_bytes, b.tokens + (now - b.t) * b.rate_Bps) if b.rate_Bps > 0 else fresh.tokens
    return Bucket(rate_Bps, fresh.burst_bytes, min(accrued, fresh.burst_bytes), now)


def budget_bps(cap_bps: float, egress_bps: float | None, capacity_bps: float | None,
               busy_fraction: float = 0.5, floor_fraction: float = 0.1) -> float:
    """The fill rate (bits/s) given how busy serving is; the cap when serving load is unknown."""
    if egress_bps is None or not capacity_bps or capacity_bps <= 0:
        return cap_bps
    load = min(max(egress_bps / capacity_bps, 0.0), 1.0)
    if load <= busy_fraction:
        return cap_bps
    span = 1.0 - busy_fraction
    share = 1.0 - (load - busy_fraction) / span if span > 0 else 0.0
    return cap_bps * (floor_fraction + (1.0 - floor_fraction) * share)
