"""The withdrawal log's format (contracts.withdrawals): events round-trip, every malformed one is refused
naming the field, the fold gives what is withdrawn now, and a file key is covered exactly when it lies
under a withdrawn title or version of the origin's layout."""
from __future__ import annotations

import json

import pytest

from contracts.withdrawals import (EMPTY, WithdrawalError, decode_event, encode_event, event_key, fold, new_event,
                                   parse_target)
from origin.core.layout import file_key

V1, V2 = "v0123456789abcdef", "vfedcba9876543210"
AT = 1_767_225_600.123456


def event(action="withdraw", title="t1", version=V1, reason="bad encode", by="content-team", at=AT, nonce="0" * 16):
    return new_event(action, title, version, reason, by, at, nonce)


def test_an_event_round_trips_under_a_time_sorted_key():
    e = event()
    assert e.key == "withdrawals/20260101T000000.123456Z-0000000000000000.json"
    assert decode_event(encode_event(e), e.key) == e
    assert event_key(AT + 1, "0" * 16) > e.key  # keys sort by time


# written by the dict-walking codec this contract had before its msgspec Structs: the log keeps these bytes
PINNED = [
    (("withdraw", "t1", V1, 'mauvais encodage — «CONTENT-12» "q" \\', "content-team", AT),
     '{"v":1,"action":"withdraw","title":"t1","version":"v0123456789abcdef",'
     '"reason":"mauvais encodage — «CONTENT-12» \\"q\\" \\\\","by":"content-team","at":1767225600.123456}'),
    (("undo", "t1", None, "ok", "appliance:ams-1", 1_767_225_600.0),
     '{"v":1,"action":"undo","title":"t1","version":null,"reason":"ok","by":"appliance:ams-1","at":1767225600.0}'),
]


@pytest.mark.parametrize("fields,raw", PINNED, ids=["version", "whole-title"])
def test_stored_bytes_are_pinned(fields, raw):
    e = new_event(*fields, nonce="0" * 16)
    assert encode_event(e) == raw.encode() and decode_event(raw.encode(), e.key) == e


BAD = [
    ("not-json", b"{", "not valid JSON"),
    ("version", {"v": 2}, "schema version 2 not supported"),
    ("no-version", {"v": None}, "schema version None not supported"),
    ("unknown-field", {"extra": 1}, ".extra: unknown setting"),
    ("key-is-not-stored", {"key": "withdrawals/x.json"}, ".key: unknown setting"),
    ("typo", {"titel": "t1", "title": None}, ".titel: unknown setting (did you mean 'title'?"),
    ("action", {"action": "delete"}, ".action: must be one of withdraw, undo"),
    ("title", {"title": "../etc"}, ".title: a title id"),
    ("title-json", {"title": "x.json"}, ".title: a title id"),
    ("version-shape", {"version": "v1"}, ".version: a version"),
    ("reason-missing", {"reason": ""}, ".reason: required"),
    ("reason-blank", {"reason": "   "}, ".reason: required"),
    ("reason-newline", {"reason": "a\nb"}, ".reason: required, at most 300 printable"),
    ("reason-long", {"reason": "x" * 301}, ".reason"),
    ("by", {"by": "a b"}, ".by: a caller's name"),
    ("at", {"at": "yesterday"}, ".at: must be a number"),
    ("at-bool", {"at": True}, ".at: must be a number"),
    ("at-negative", {"at": -1}, ".at: must be at least 0"),
    ("not-an-object", b"[]", ": must be an object"),
]


@pytest.mark.parametrize("change,error", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_malformed_event_is_refused_naming_the_field(change, error):
    e = event()
    raw = change if isinstance(change, bytes) else json.dumps(
        {k: v for k, v in {**json.loads(encode_event(e)), **change}.items() if v is not None}).encode()
    with pytest.raises(WithdrawalError, match=error.replace("(", r"\(").replace(".", r"\.")):
        decode_event(raw, e.key)


def test_keys_and_sizes_are_checked_before_the_body():
    e = event()
    with pytest.raises(WithdrawalError, match="not an event's key"):
        decode_event(encode_event(e), "withdrawals/anything.json")
    with pytest.raises(WithdrawalError, match="larger than"):
        decode_event(b" " * 5000, e.key)


FOLDS = [
    ("withdrawn", [("withdraw", "t1", V1)], {("t1", V1)}),
    ("undone", [("withdraw", "t1", V1), ("undo", "t1", V1)], set()),
    ("undo-is-exact", [("withdraw", "t1", V1), ("undo", "t1", None)], {("t1", V1)}),
    ("withdrawn-again", [("withdraw", "t1", V1), ("undo", "t1", V1), ("withdraw", "t1", V1)], {("t1", V1)}),
    ("title-and-version", [("withdraw", "t1", None), ("withdraw", "t2", V2)], {("t1", None), ("t2", V2)}),
]


@pytest.mark.parametrize("steps,active", [c[1:] for c in FOLDS], ids=[c[0] for c in FOLDS])
def test_the_fold_in_key_order(steps, active):
    events = [event(a, t, v, at=AT + i) for i, (a, t, v) in enumerate(steps)]
    folded = fold(reversed(events))  # listing order does not matter: keys carry the time
    assert set(folded.active) == active and [e.action for e in folded.events] == [s[0] for s in steps]


COVERS = [
    ("the-version", (("t1", V1),), file_key("t1", V1, "720p.mp4"), True),
    ("its-playlist", (("t1", V1),), file_key("t1", V1, "720p.m3u8"), True),
    ("another-version", (("t1", V1),), file_key("t1", V2, "720p.mp4"), False),
    ("every-version", (("t1", None),), file_key("t1", V2, "720p.mp4"), True),
    ("another-title", (("t1", None),), file_key("t10", V1, "720p.mp4"), False),
    ("not-media", (("t1", None),), "fill-manifests/t1/x.json", False),
    ("nothing-withdrawn", (), file_key("t1", V1, "720p.mp4"), False),
]


@pytest.mark.parametrize("withdrawn,key,covered", [c[1:] for c in COVERS], ids=[c[0] for c in COVERS])
def test_covers_follows_the_origin_layout(withdrawn, key, covered):
    w = fold(event("withdraw", t, v, at=AT + i) for i, (t, v) in enumerate(withdrawn)) if withdrawn else EMPTY
    assert (w.covers(key) is not None) is covered


@pytest.mark.parametrize("text,want", [("t1", ("t1", None)), (f"t1/{V1}", ("t1", V1))])
def test_targets(text, want):
    assert parse_target(text) == want


@pytest.mark.parametrize("text", ["", "t1/", "t1/v1", "/v0123456789abcdef", "a b"])
def test_bad_targets(text):
    with pytest.raises(WithdrawalError):
        parse_target(text)
