"""The planner's inputs, pure: the fleet state (steering.fleetstate writes it, fill.fleetstate reads,
merges and views it), the catalog check (a bad entry is skipped and named), demand in plays, and the
manifest store's pointer (fill writes it, steering reads it: both must agree)."""
from __future__ import annotations

import json
from dataclasses import replace

import msgspec
import pytest

from contracts.ids import FileKey
from contracts.planpointer import POINTER, Entry, Pointer, PointerError, decode_pointer, encode_pointer
from fill import fleetstate
from fill.core.model import CatalogFile
from fill.fleetstate import FleetStateError
from fill.manifeststore import ManifestStore, StoreError, plan_id
from fill.service import by_region, checked_catalog, demand_popularity
from origin.backends.local import LocalDirBackend
from fill_helpers import title_entry
from steering import fillplan
from steering.fleetstate import encode as encode_fleet_state

H = "0123456789abcdef" * 2
K1, K2 = FileKey("files/t/v1/a.mp4"), FileKey("files/t/v1/b.mp4")


def appliance(id="ams-1", site="ams", report=True, files=(K1,), disks=None, age=1.0) -> dict:
    disks = disks if disks is not None else [{"tier": "ssd", "state": "ok", "total_bytes": 100, "free_bytes": 50},
                                             {"tier": "hdd", "state": "ok", "total_bytes": 1000, "free_bytes": 9},
                                             {"tier": "hdd", "state": "failed", "total_bytes": 500, "free_bytes": 0}]
    return {"id": id, "site": site, "base_url": f"http://{id}:8080", "capacity_bps": 1e10, "status": "up",
            "reason": "", "report": {"age_s": age, "seq": 3, "site": site, "accepting": True, "draining": False,
                                     "disks": disks, "popularity": {K1: [2.0, 300.0]}} if report else None,
            "inventory": {"generation": 1, "files": list(files)}}


def state(*items: dict) -> bytes:
    return encode_fleet_state([json.loads(json.dumps(i)) for i in items], 1.0)


def test_fleet_state_round_trip_from_steering_encoder():
    (a, b) = fleetstate.decode(state(appliance(), appliance("ams-2", report=False, files=())))
    assert a.id == "ams-1" and a.reported and a.files == {K1} and a.popularity == {K1: (2.0, 300.0)}
    assert a.tier_bytes() == (100, 1000)  # the failed disk does not count
    assert not b.reported and b.tier_bytes() is None  # no report: capacity unknown, no plan


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(v=2), "v: schema version 2"),
    (lambda d: d.pop("appliances"), "appliances: required"),
    (lambda d: d["appliances"][0].update(id="a b"), "appliances[0].id: must be 1-64"),
    (lambda d: d["appliances"][0].update(base_url="ftp://x"), "appliances[0].base_url: must be an http(s)"),
    (lambda d: d["appliances"][0]["inventory"]["files"].append("../etc"), "appliances[0].inventory.files[1]"),
    (lambda d: d["appliances"][0]["report"]["disks"][0].update(total_bytes=-1), "disks[0].total_bytes"),
    (lambda d: d["appliances"][0]["report"]["popularity"].update(x=[1]), "popularity.x: must be [requests, bytes]"),
    (lambda d: d["appliances"].append(d["appliances"][0]), "appliances[1].id: 'ams-1' listed twice"),
    (lambda d: d.pop("v"), "v: schema version None"),
    (lambda d: d["appliances"][0]["report"]["popularity"].update({"../y": [1, 2]}), "report.popularity: '../y': "),
    (lambda d: d["appliances"][0].update(capacity_bps=-1), "appliances[0].capacity_bps: must be at least 0"),
    (lambda d: d["appliances"][0]["report"].pop("age_s"), "appliances[0].report.age_s: required"),
    (lambda d: d["appliances"][0].update(status=None), "appliances[0].status: must be a string"),
], ids=["version", "no-appliances", "bad-id", "bad-url", "bad-key", "negative-disk", "bad-popularity", "twice",
        "no-version", "bad-popularity-key", "negative-capacity", "no-age", "no-status"])
def test_a_malformed_fleet_state_names_the_field(mutate, message):
    data = json.loads(state(appliance()))
    mutate(data)
    with pytest.raises(FleetStateError) as err:
        fleetstate.decode(json.dumps(data).encode())
    assert message in str(err.value), str(err.value)


def test_merge_takes_the_freshest_report_per_appliance():
    r1 = fleetstate.decode(state(appliance(age=5.0, files=(K1,)), appliance("fra-1", "fra", report=False)))
    r2 = fleetstate.decode(state(appliance(age=0.5, files=(K1, K2)), appliance("fra-1", "fra", age=2.0)))
    merged = {a.id: a for a in fleetstate.merge([r1, r2])}
    assert merged["ams-1"].files == {K1, K2} and merged["fra-1"].reported
    view = fleetstate.view_of(merged.values(), {"ams": "nl"})
    assert [(c.site, c.region) for c in view.clusters] == [("ams", "nl"), ("fra", "fra")]
    assert view.holders[K2] == {"ams-1"} and view.holders[K1] == {"ams-1", "fra-1"}


def _meta(entry, **changes):
    return replace(entry, meta=replace(entry.meta, **changes))


def _rendition(entry, **changes):
    return replace(entry, renditions=(msgspec.structs.replace(entry.renditions[0], **changes),))


@pytest.mark.parametrize("break_it, reason", [
    (lambda e: _meta(e, release_date="tomorrow"), "Invalid isoformat"),
    (lambda e: _rendition(e, xxh3="XYZ"), "is not 32 lowercase hex"),
    (lambda e: _rendition(e, size=-5), "is not a byte count"),
    (lambda e: _rendition(e, key="../up"), "file key"),
], ids=["release-date", "hash", "size", "key"])
def test_a_bad_catalog_entry_is_skipped_and_named(break_it, reason):
    good, _ = title_entry("good", {"720p.mp4": b"x" * 10})
    bad, _ = title_entry("bad", {"720p.mp4": b"y" * 10})
    check = checked_catalog([good, break_it(bad)])
    assert check.titles == 1 and [f.title_id for f in check.files] == ["good"]
    (skipped,) = check.skipped
    assert skipped.title_id == "bad" and reason in skipped.reason


def test_a_key_named_by_two_titles_with_other_content_skips_the_second():
    first = CatalogFile(K1, 10, H, "t1")
    clash = CatalogFile(K1, 11, H, "t2")
    same = CatalogFile(K1, 10, H, "t3")
    check = checked_catalog([first, clash, same])
    assert [f.title_id for f in check.files] == ["t1"] and check.titles == 2
    assert [s.title_id for s in check.skipped] == ["t2"]


def test_demand_in_plays():
    counts = {"ams": {K1: (3.0, 2000.0), K2: (0.5, 0.0), FileKey("not/in/catalog"): (9.0, 9.0)}, "fra": {}}
    assert demand_popularity(counts, {K1: 1000, K2: 50}) == {"ams": {K1: 2.0, K2: 0.5}}


def test_the_pointer_fill_writes_is_the_one_steering_reads():
    pid = plan_id(1767225600.0, {"ams-1": H})
    assert pid.startswith("20260101T000000Z-")
    entry = Entry(f"fill-manifests/{pid}/ams-1.json", H, 12, H)
    raw = encode_pointer(Pointer(pid, 1767225600.0, {"ams-1": entry}))
    assert decode_pointer(raw).manifests == {"ams-1": entry}  # one decoder (contracts.planpointer) on both sides
    assert fillplan.Entry is Entry and fillplan.PointerError is PointerError


# written by the dict-walking codec this contract had before its msgspec Structs: the bytes stay these
PINNED_POINTER = (
    b'{"v":1,"plan":"20260101T000000Z-0123456789abcdef","generated_at":1767225600.25,"manifests":'
    b'{"a-1":{"key":"fill-manifests/20260101T000000Z-0123456789abcdef/a-1.json","version":"' + H.encode() + b'",'
    b'"size":7,"xxh3":"' + H.encode() + b'"},"b-2":{"key":"fill-manifests/20260101T000000Z-0123456789abcdef/b-2.json",'
    b'"version":"' + H.encode() + b'","size":12,"xxh3":"' + H.encode() + b'"}}}')


def test_the_pointer_bytes_are_pinned():
    pid = "20260101T000000Z-0123456789abcdef"
    p = Pointer(pid, 1767225600.25,
                {a: Entry(f"fill-manifests/{pid}/{a}.json", H, n, H) for a, n in (("b-2", 12), ("a-1", 7))})
    assert encode_pointer(p) == PINNED_POINTER and decode_pointer(PINNED_POINTER) == p


PLAN = b'{"v": 1, "plan": "20260101T000000Z-0123456789abcdef", "generated_at": 1, "manifests": '


@pytest.mark.parametrize("raw, message", [
    (b"{", "not valid JSON"), (b"[]", "v: schema version"), (b'{"v": 2}', "v: schema version"),
    (b'{"v": 1, "plan": "x", "generated_at": 1, "manifests": {}}', "plan: must be a plan id"),
    (PLAN + b'{"a": {"key": "../x"}}}', "manifests.a.version: required"),
    (PLAN + b'{"a": {"key": "../x", "version": "' + H.encode() + b'", "size": 1, "xxh3": "' + H.encode() + b'"}}}',
     "manifests.a.key: must be a file key under fill-manifests/"),
    (PLAN + b'{"a": {"key": "t/x", "version": "' + H.encode() + b'", "size": 1, "xxh3": "' + H.encode() + b'"}}}',
     "manifests.a.key: must be a file key under fill-manifests/"),
    (PLAN + b'{"a": {"key": "fill-manifests/x", "version": "v1", "size": 1, "xxh3": "' + H.encode() + b'"}}}',
     "manifests.a.version: must be 32 lowercase hex"),
    (PLAN + b'{"a": {"key": "fill-manifests/x", "version": "' + H.encode() + b'", "size": -1, "xxh3": "'
     + H.encode() + b'"}}}', "manifests.a.size: must be at least 0"),
    (PLAN + b'{"a b": {"key": "fill-manifests/x", "version": "' + H.encode() + b'", "size": 1, "xxh3": "'
     + H.encode() + b'"}}}', "manifests['a b']: not a valid key (must be 1-64 of [A-Za-z0-9_.-])"),
    (PLAN.replace(b'"generated_at": 1', b'"generated_at": true') + b'{}}', "generated_at: must be a number"),
], ids=["json", "array", "version", "plan-id", "entry", "entry-key", "entry-prefix", "entry-version", "entry-size",
        "appliance", "time"])
def test_a_damaged_pointer_is_refused_on_both_sides(raw, message, tmp_path):
    with pytest.raises(PointerError) as err:
        decode_pointer(raw)
    assert str(err.value).startswith(f"{POINTER}: {message}"), str(err.value)
    backend = LocalDirBackend(tmp_path)  # the planner's side: a damaged pointer in its store
    backend.put_bytes(POINTER, raw, "application/json")
    with pytest.raises(StoreError):
        ManifestStore(backend).current()



@pytest.mark.parametrize("counts, regions, expected", [
    ({"ams": {"k": (1.0, 10.0)}}, {}, {"ams": {"k": (1.0, 10.0)}}),  # a site is its own region
    ({"ams": {"k": (1.0, 10.0)}, "rtm": {"k": (2.0, 5.0), "j": (1.0, 0.0)}}, {"ams": "nl", "rtm": "nl"},
     {"nl": {"k": (3.0, 15.0), "j": (1.0, 0.0)}}),  # two sites of one region add up
    ({"ams": {"k": (1.0, 0.0)}, "all": {"k": (4.0, 0.0)}}, {"ams": "nl"},
     {"nl": {"k": (1.0, 0.0)}, "all": {"k": (4.0, 0.0)}}),  # playback's unattributed default stays apart
], ids=["identity", "sites-summed", "default-region-apart"])
def test_demand_by_site_is_summed_into_content_regions(counts, regions, expected):
    assert by_region(counts, regions) == expected
