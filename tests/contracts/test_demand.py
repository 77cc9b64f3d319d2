"""The demand wire format: what steering and playback replicas report and the planner sums."""
from __future__ import annotations

import pytest

from contracts.demand import DemandError, DemandReport, decode, encode, merge

K = "files/t1/v0123456789abcdef/720p.mp4"


def test_round_trip_and_merge_at_one_instant():
    a = DemandReport("steering-1", "steering", 1000.0, 100.0, {"ams": {K: (8.0, 800.0)}})
    b = DemandReport("steering-2", "steering", 1100.0, 100.0, {"ams": {K: (2.0, 200.0)}, "lon": {K: (1.0, 10.0)}})
    assert decode(encode(a)) == a
    total = merge([a, b], 1100.0)
    assert total["ams"][K] == pytest.approx((6.0, 600.0))  # 8 decayed one half-life + 2
    assert total["lon"][K] == (1.0, 10.0)


@pytest.mark.parametrize("raw, where", [
    (b"{", "not valid JSON"),
    (b"null", "v:"),
    (b'{"v": 2}', "v:"),
    (b'{"v": 1, "source": "a b", "kind": "steering", "at": 1, "half_life_s": 1, "regions": {}}', "source:"),
    (b'{"v": 1, "source": "s", "kind": "cdn", "at": 1, "half_life_s": 1, "regions": {}}', "kind:"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": 1, "half_life_s": 0, "regions": {}}', "half_life_s:"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": 1e999, "half_life_s": 1, "regions": {}}', "at:"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": 1, "half_life_s": 1, "regions": {"ams": {"../x": [1, 1]}}}',
     "regions.ams"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": 1, "half_life_s": 1, "regions": {"ams": {"a/b": [1]}}}',
     "must be [requests, bytes]"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": 1, "half_life_s": 1, "regions": {"ams": {"a/b": [-1, 1]}}}',
     "negative"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": 1, "half_life_s": 1, "regions": []}', "regions:"),
], ids=["json", "null", "version", "source", "kind", "half-life", "infinite", "key", "pair", "negative", "regions"])
def test_malformed_demand_is_refused_naming_the_field(raw, where):
    with pytest.raises(DemandError, match=where.replace("[", r"\[").replace(".", r"\.")):
        decode(raw)
