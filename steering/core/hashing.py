"""Weighted rendezvous (highest-random-weight) hashing with xxhash.

Each member gets score = weight / -ln(u), u uniform in (0,1) from xxh64(key, seed=member's seed);
the highest score wins. Members win in proportion to their weight, and adding or removing one member
moves only the keys it wins or won: a file concentrates on the same appliances of a site over time
(so its copies stay where fill put them) without one appliance becoming every file's first choice.
"""
from __future__ import annotations

import math
from typing import Any

import xxhash

_TWO_64 = float(1 << 64)
_h64 = xxhash.xxh64_intdigest
_log = math.log


def seed_of(name: str) -> int:
    """A member's stable 64-bit seed (its id hashed, so renaming is the only thing that moves it)."""
    return _h64(name.encode(), 0x5EED)


def score(key: bytes, seed: int, weight: float) -> float:
    u = (_h64(key, seed) + 0.5) / _TWO_64
    return weight / -_log(u)


def int_key(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 8) // 8 or 1, "big")


def rendezvous_sort(specs: list[Any], key: bytes) -> list[Any]:
    """Members (with .seed and .capacity_bps) best first for `key`. Ordering by -ln(u)/weight
    ascending is ordering by score descending; the keys are built in one comprehension, not a
    Python call per member (this runs for every steering decision)."""
    if len(specs) < 2:
        return specs
    h64, log, two64 = _h64, _log, _TWO_64
    keyed = sorted([(-log((h64(key, m.seed) + 0.5) / two64) / m.capacity_bps, i) for i, m in enumerate(specs)])
    return [specs[i] for _, i in keyed]


def rendezvous_best(specs: list[Any], key: bytes) -> Any:
    """The first member rendezvous_sort would give, without sorting."""
    if len(specs) == 1:
        return specs[0]
    h64, log, two64 = _h64, _log, _TWO_64
    return specs[min([(-log((h64(key, m.seed) + 0.5) / two64) / m.capacity_bps, i)
                      for i, m in enumerate(specs)])[1]]
