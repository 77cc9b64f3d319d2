"""The appliance's request verdicts (oca.core.request.plan), table-tested without a server."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.ids import KeyId
from contracts.ranges import ByteRange, Partial, Unsatisfiable, Whole
from contracts.token import Keyring, client_prefix_for, sign_path
from oca.core.request import FileFacts, Health, Refuse, Serve, TargetMemo, plan

KEYS = Keyring({KeyId("k1"): b"k" * 32}, KeyId("k1"))
NOW = 1_800_000_000
HELD = {"titles/t1/720p.mp4": FileFacts(1000, '"abc"', NOW - 100)}


def signed(path="/titles/t1/720p.mp4", exp=NOW + 60, client=None):
    prefix = client_prefix_for(client) if client else None
    return sign_path(path, KEYS, exp, prefix).encode()


def run(target, method="GET", rng=None, if_range=None, client="192.0.2.1", memo=None, now=NOW):
    return plan(method, target, rng, if_range, client, KEYS, now, HELD.get, lambda f: f, memo)


@pytest.mark.parametrize("kwargs,expected", [
    (dict(target=signed()), Serve("titles/t1/720p.mp4", HELD["titles/t1/720p.mp4"], Whole("no range"))),
    (dict(target=signed(), rng="bytes=0-9"), Serve("titles/t1/720p.mp4", HELD["titles/t1/720p.mp4"],
                                                   Partial((ByteRange(0, 10),)))),
    (dict(target=signed(), rng="bytes=5000-"), Serve("titles/t1/720p.mp4", HELD["titles/t1/720p.mp4"],
                                                     Unsatisfiable(1000))),
    (dict(target=signed(), method="HEAD"), Serve("titles/t1/720p.mp4", HELD["titles/t1/720p.mp4"],
                                                 Whole("no range"))),
    (dict(target=signed(), method="POST"), Refuse(405, "method-not-allowed")),
    (dict(target=b"/healthz"), Health()),
    (dict(target=signed("/titles/none.mp4")), Refuse(404, "not-held", "titles/none.mp4")),
], ids=["whole", "range", "unsatisfiable", "head", "post", "health", "not-held"])
def test_verdicts(kwargs, expected):
    assert run(**kwargs) == expected


@pytest.mark.parametrize("target,reason", [
    (b"titles/x", "bad-target"),
    (b"/titles/%2e%2e/x", "bad-path"),
    (b"/titles\\x", "bad-path"),
    (b"/t\x00", "bad-path"),
    (b"/\xff", "bad-path"),
    (b"/../etc/passwd", "bad-path"),
    (b"/titles//x", "bad-path"),
    (b"/.oca/keys.toml", "bad-path"),
    (b"/titles/t1/720p.mp4", "token-missing"),
    (signed().replace(b"720p", b"1080p"), "bad-signature"),
    (signed(exp=NOW - 1), "token-expired"),
    (signed(client="198.51.100.9"), "wrong-client"),
], ids=["relative", "encoded-dots", "backslash", "nul", "non-ascii", "dotdot", "empty-segment", "dot-dir",
        "unsigned", "wrong-path", "expired", "wrong-client"])
def test_refusals(target, reason):
    verdict = run(target)
    assert type(verdict) is Refuse and verdict.reason == reason
    assert verdict.status == (400 if reason in ("bad-target", "bad-path") else 403)


def test_memo_still_checks_expiry_and_client_every_time():
    memo = TargetMemo()
    target = signed(exp=NOW + 10, client="192.0.2.1")
    assert type(run(target, memo=memo)) is Serve
    assert memo.get(target) is not None
    assert run(target, memo=memo, now=NOW + 11) == Refuse(403, "token-expired", f"token expired at {NOW + 10}")
    assert run(target, memo=memo, client="203.0.113.1").reason == "wrong-client"


def test_memo_never_holds_refusals_and_is_bounded():
    memo = TargetMemo(size=3)
    run(signed().replace(b"720p", b"1080p"), memo=memo)
    assert memo.get(signed().replace(b"720p", b"1080p")) is None
    for i in range(10):
        run(signed(exp=NOW + 100 + i), memo=memo)
    assert len(memo._seen) <= 3


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_no_target_is_served_without_a_valid_signature(target):
    verdict = run(b"/" + target)
    assert type(verdict) in (Refuse, Health)
