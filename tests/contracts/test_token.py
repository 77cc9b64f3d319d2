"""The URL token: what steering signs, the appliance verifies — table-tested, plus properties."""
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.ids import KeyId
from contracts.token import (BadSignature, Grant, Keyring, PathSigner, Scope, TokenExpired, TokenMalformed, TokenMissing,
                             UnknownKey, WrongClient, WrongScope, client_prefix_for, encode_query, fill_keys, fill_token,
                             parse_query, sign_path, verify)

K1, K2 = b"1" * 32, b"2" * 32
KEYS = Keyring({KeyId("k1"): K1, KeyId("k2"): K2}, KeyId("k2"))
NOW = 1_700_000_000
PATH = "/titles/t1/720p.mp4"


def _query(path=PATH, exp=NOW + 60, prefix=None, keys=KEYS):
    return sign_path(path, keys, exp, prefix).split("?", 1)[1]


def _verify(query, path=PATH, client="203.0.113.7", now=NOW, keys=KEYS, scope=Scope.PLAY):
    return verify(path, parse_query(query), keys, now, client, scope)


def test_round_trip_with_prefix():
    prefix = client_prefix_for("203.0.113.7")
    grant = _verify(_query(prefix=prefix))
    assert grant.client_prefix == ipaddress.ip_network("203.0.113.0/24")
    assert grant.key_id == "k2"


@pytest.mark.parametrize("query,path,client,now,error", [
    ("", PATH, "203.0.113.7", NOW, TokenMissing),
    ("e=abc&k=k2&s=x", PATH, "203.0.113.7", NOW, TokenMalformed),
    ("e=1&e=2&k=k2&s=x", PATH, "203.0.113.7", NOW, TokenMalformed),
    (_query(), "/titles/t1/1080p.mp4", "203.0.113.7", NOW, BadSignature),
    (_query().replace("k=k2", "k=k9"), PATH, "203.0.113.7", NOW, UnknownKey),
    (_query(exp=NOW - 1), PATH, "203.0.113.7", NOW, TokenExpired),
    (_query(prefix=client_prefix_for("203.0.113.7")), PATH, "198.51.100.1", NOW, WrongClient),
    (_query(prefix=client_prefix_for("203.0.113.7")), PATH, None, NOW, WrongClient),
    (_query(prefix=client_prefix_for("2001:db8:1:2::5")), PATH, "2001:db8:2::5", NOW, WrongClient),
    (_query(exp=NOW + 60).replace(f"e={NOW + 60}", f"e={NOW + 6000}"), PATH, "203.0.113.7", NOW, BadSignature),
    (_query(prefix=client_prefix_for("203.0.113.7")).replace("c=203.0.113.0/24", "c=0.0.0.0/0"), PATH,
     "198.51.100.1", NOW, BadSignature),
    (_query() + "&t=fill&f=ams-2", PATH, "203.0.113.7", NOW, WrongScope),
], ids=["missing", "malformed-expiry", "repeated-param", "wrong-path", "unknown-key", "expired",
        "wrong-prefix-v4", "no-client", "wrong-prefix-v6", "expiry-tampered", "prefix-widened", "scope-mismatch"])
def test_refusals(query, path, client, now, error):
    with pytest.raises(error):
        _verify(query, path, client, now)


_E = f"e={NOW + 60}"
_V6 = client_prefix_for("2001:db8:1:2::5")


@pytest.mark.parametrize("respelled", [
    _query().replace(_E, f"e=+{NOW + 60}"),
    _query().replace(_E, f"e=0{NOW + 60}"),
    _query().replace(_E, f"e={NOW + 60:_}"),
    _query().replace(_E, f"e= {NOW + 60}"),
    _query().replace(_E, f"e=\u0661{NOW + 60}"),  # a non-ASCII digit int() would accept
    _query() + "&t=play",
    _query(prefix=_V6).replace(f"c={_V6}", f"c={str(_V6).upper()}"),
    _query(prefix=_V6).replace(f"c={_V6}", f"c={_V6.exploded}"),
    _query().replace("s=", "s=\u00e9"),  # non-ASCII: used to raise TypeError in compare_digest (a 500)
    _query() + "x",  # a 44th signature character
    _query().replace("k=k2", "k=k\u00b2"),
], ids=["plus", "leading-zero", "underscore", "space", "arabic-digit", "explicit-play", "upper-case-prefix",
        "exploded-prefix", "non-ascii-signature", "long-signature", "non-ascii-key-id"])
def test_one_token_has_one_spelling(respelled):
    """Only the canonical form `encode_query` writes verifies: no token yields a second URL."""
    assert _verify(_query(prefix=_V6), client="2001:db8:1::9")  # the canonical form itself is fine
    with pytest.raises(TokenMalformed):
        _verify(respelled, client="2001:db8:1::9")


def test_every_listed_key_verifies_for_rotation():
    old = Keyring({KeyId("k1"): K1}, KeyId("k1"))
    assert _verify(_query(keys=old)).key_id == "k1"  # signed with the old key, verified by the new ring


def test_ipv4_mapped_client_matches_v4_prefix():
    assert _verify(_query(prefix=client_prefix_for("203.0.113.7")), client="::ffff:203.0.113.9")


def test_fill_token_any_path_but_only_fill_scope():
    token = fill_token(fill_keys(KEYS, "ams-2"), NOW + 60, "ams-2")
    grant = verify("/any/file.mp4", parse_query(token), KEYS, NOW, None, Scope.FILL)
    assert grant.scope is Scope.FILL and grant.holder == "ams-2"
    with pytest.raises(WrongScope):
        verify("/any/file.mp4", parse_query(token), KEYS, NOW, None, Scope.PLAY)


def test_fill_token_opens_one_source_for_one_fetcher():
    """Minted with the source's key derived for the fetcher: another source, another fetcher's name
    or the source's plain key (a token made without derivation) all fail."""
    other_source = Keyring({KeyId("k2"): b"9" * 32}, KeyId("k2"))
    token = fill_token(fill_keys(KEYS, "ams-2"), NOW + 60, "ams-2")
    with pytest.raises(BadSignature):
        verify("*", parse_query(token), other_source, NOW, None, Scope.FILL)
    with pytest.raises(BadSignature):
        verify("*", parse_query(token.replace("f=ams-2", "f=ams-3")), KEYS, NOW, None, Scope.FILL)
    with pytest.raises(BadSignature):
        verify("*", parse_query(fill_token(KEYS, NOW + 60, "ams-2")), KEYS, NOW, None, Scope.FILL)
    with pytest.raises(TokenExpired):
        verify("*", parse_query(token), KEYS, NOW + 61, None, Scope.FILL)


@pytest.mark.parametrize("query", [
    f"e={NOW}&k=k2&t=fill&s={'A' * 43}",  # fill without its fetcher
    _query() + "&f=ams-2",  # a fetcher on a play token
    fill_token(fill_keys(KEYS, "a"), NOW + 60, "a").replace("f=a", "f=a%0Ab"),
], ids=["fill-without-f", "play-with-f", "bad-holder"])
def test_fill_holder_rules(query):
    with pytest.raises(TokenMalformed):
        verify("*", parse_query(query), KEYS, NOW, None, Scope.FILL if "t=fill" in query else Scope.PLAY)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_query_never_crashes_and_never_passes(query):
    try:
        _verify(query)
    except Exception as exc:  # only the token hierarchy may come out
        from contracts.token import TokenError
        assert isinstance(exc, TokenError)
    else:
        pytest.fail("an arbitrary query verified")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**31), st.sampled_from(["k1", "k2"]), st.booleans())
def test_signed_grants_verify(exp, kid, bind):
    prefix = client_prefix_for("192.0.2.55") if bind else None
    grant = Grant(PATH, exp, KeyId(kid), prefix)
    query = encode_query(grant, KEYS.secret(KeyId(kid)))
    assert verify(PATH, parse_query(query), KEYS, exp, "192.0.2.1") == grant


@given(st.sampled_from(["/a/b.mp4", "/titles/x y/1080p.mp4", "/t/%41.mp4"]), st.integers(0, 2**40),
       st.sampled_from([None, "203.0.113.0/24", "2001:db8:1::/48"]))
def test_path_signer_signs_exactly_as_sign_path(path, expires, prefix):
    net = ipaddress.ip_network(prefix) if prefix else None
    assert PathSigner(KEYS).sign(path, expires, str(net) if net else "") == sign_path(path, KEYS, expires, net)
