"""The demand wire format: what steering and playback replicas report and the planner sums."""
from __future__ import annotations

import re

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


# written by the dict-walking codec this contract had before its msgspec Struct: the bytes stay these
PINNED = (b'{"v":1,"source":"steering-1","kind":"steering","at":1767225600.5,"half_life_s":86400.0,"regions":'
          b'{"ams":{"files/t1/v0123456789abcdef/720p.mp4":[3.0,12.346]},'
          b'"lon":{"files/t1/v0123456789abcdef/720p.mp4":[1.2e-05,0.0]}}}')


def test_the_wire_bytes_are_pinned():
    report = DemandReport("steering-1", "steering", 1767225600.5, 86400.0,
                          {"ams": {K: (3.0000001234, 12.34567)}, "lon": {K: (1.234e-05, 0.0)}})
    assert encode(report) == PINNED
    assert decode(PINNED) == DemandReport("steering-1", "steering", 1767225600.5, 86400.0,
                                          {"ams": {K: (3.0, 12.346)}, "lon": {K: (1.2e-05, 0.0)}})
    assert decode(PINNED.replace(b'"at"', b'"later":1,"at"')).at == 1767225600.5  # unknown fields: ignored


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
     "regions.ams.a/b: must be [requests, bytes], two non-negative numbers"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": 1, "half_life_s": 1, "regions": {"ams": {"a/b": [-1, 1]}}}',
     "regions.ams.a/b[0]: must be at least 0"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": 1, "half_life_s": 1, "regions": []}', "regions:"),
    (b'{"source": "s", "kind": "steering", "at": 1, "half_life_s": 1, "regions": {}}', "v: schema version None"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": 1, "half_life_s": 1}', "regions: required"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": "1", "half_life_s": 1, "regions": {}}',
     "at: must be a number"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": 1, "half_life_s": 1, "regions": {"a b": {}}}',
     "regions['a b']: not a valid key (must be a region id (1-64 of [A-Za-z0-9_.-]))"),
    (b'{"v": 1, "source": "s", "kind": "steering", "at": 1, "half_life_s": 1, "regions": {"ams": []}}',
     "regions.ams: must be a map"),
], ids=["json", "null", "version", "source", "kind", "half-life", "infinite", "key", "pair", "negative", "regions",
        "no-version", "no-regions", "at-type", "region-id", "region-type"])
def test_malformed_demand_is_refused_naming_the_field(raw, where):
    with pytest.raises(DemandError, match=re.escape(where)):
        decode(raw)
