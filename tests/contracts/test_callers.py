"""Callers of control-plane endpoints: bearer tokens by hash with roles, appliances by signature."""
from __future__ import annotations

import hashlib

import pytest

from contracts.callers import (Caller, Forbidden, Unauthorized, appliance_authorization, authenticate, new_token,
                               parse_callers)
from contracts.ids import KeyId
from contracts.keys import derive_keyring
from contracts.token import Keyring
from contracts.structconf import ConfigError

MASTER = Keyring({KeyId("k1"): b"m" * 32}, KeyId("k1"))
NOW = 1_800_000_000
TOKEN, DIGEST = new_token()
CALLERS = parse_callers({"callers": {"playback": {"token_sha256": DIGEST, "roles": ["steer", "fleet"]}}})


def keys_for(appliance: str):
    return derive_keyring(MASTER, appliance) if appliance in ("ams-1", "ams-2") else None


def auth(header, method="GET", target="/v1/fill-manifest?appliance=ams-1", now=NOW):
    return authenticate(header, method, target, now, CALLERS, keys_for)


def test_bearer_token_names_its_caller_and_roles():
    caller = auth(f"Bearer {TOKEN}")
    assert caller == Caller("playback", frozenset({"steer", "fleet"}))
    assert caller.require("steer") is caller
    with pytest.raises(Forbidden) as err:
        caller.require("manifests")
    assert err.value.status_hint == 403


def test_appliance_signature_names_the_appliance():
    target = "/v1/fill-manifest?appliance=ams-1"
    header = appliance_authorization(keys_for("ams-1"), "ams-1", "GET", target, NOW)
    assert auth(header).appliance == "ams-1"
    assert auth(header, now=NOW + 299).name == "appliance:ams-1"


def _signed(appliance="ams-1", keys=None, target="/v1/fill-manifest?appliance=ams-1", t=NOW):
    return appliance_authorization(keys or keys_for(appliance), appliance, "GET", target, t)


@pytest.mark.parametrize("header, kw", [
    (None, {}), ("", {}), ("Basic dXNlcg==", {}), ("Bearer nope", {}), (f"Bearer {TOKEN}x", {}),
    (_signed(), {"now": NOW + 301}),  # stale
    (_signed(), {"target": "/v1/fill-manifest?appliance=ams-2"}),  # another request
    (_signed(), {"method": "POST"}),
    (_signed("ams-2", keys=derive_keyring(MASTER, "ams-1")), {}),  # ams-1's keys claiming ams-2
    (_signed("nyc-9", keys=derive_keyring(MASTER, "nyc-9")), {}),  # not in the fleet
    (_signed().replace("s=", "s=\u00e9"), {}),
    ("x" * 600, {}),
], ids=["absent", "empty", "basic", "unknown-bearer", "bearer-suffix", "stale", "other-target", "other-method",
        "cross-signed", "stranger", "non-ascii", "too-long"])
def test_everything_else_is_401(header, kw):
    with pytest.raises(Unauthorized) as err:
        auth(header, **kw)
    assert err.value.status_hint == 401


@pytest.mark.parametrize("mapping, message", [
    ({"callers": {"p": {"token_sha256": "x", "roles": ["steer"]}}}, "callers.p.token_sha256: must be 64"),
    ({"callers": {"p": {"token_sha256": "a" * 64, "roles": ["root"]}}}, "callers.p.roles: must list"),
    ({"callers": {"p": {"token_sha256": "a" * 64, "roles": ["steer"], "role": 1}}}, "callers.p.role: unknown"),
    ({"callers": {"p": {"token_sha256": "a" * 64, "roles": ["steer"]},
                  "q": {"token_sha256": "a" * 64, "roles": ["fleet"]}}}, "callers.q.token_sha256: the same token"),
    ({"callers": {"bad name": {}}}, "callers.bad name: a caller is a table"),
], ids=["digest", "role", "unknown-key", "duplicate", "name"])
def test_callers_file_errors_name_the_key(mapping, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_callers(mapping)


def test_new_token_hash_matches():
    token, digest = new_token()
    assert hashlib.sha256(token.encode()).hexdigest() == digest and len(token) >= 43
