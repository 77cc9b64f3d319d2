"""Derived keys: each appliance holds keys derived from the fleet's master keys for it alone, so a
stolen appliance's keys verify nothing signed for any other."""
from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from contracts.ids import KeyId
from contracts.keys import (DerivedKeys, derive_keyring, derive_secret, derived_for, keyfile_text,
                            load_keyring, new_secret)
from contracts.structconf import ConfigError
from contracts.token import BadSignature, Keyring, parse_query, sign_path, verify

MASTER = Keyring({KeyId("k1"): b"m" * 32, KeyId("k2"): b"n" * 32}, KeyId("k2"))


def test_derivation_is_rfc5869_hkdf_sha256():
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"opencdn/derived-key/v1",
                    info=b"ams-1").derive(b"m" * 32)
    assert derive_secret(b"m" * 32, "ams-1") == expected


@pytest.mark.parametrize("a, b", [("ams-1", "ams-2"), ("ams-1", "origin"), ("a", "A")])
def test_each_holder_gets_its_own_keys(a, b):
    ra, rb = derive_keyring(MASTER, a), derive_keyring(MASTER, b)
    assert ra.signing_id == rb.signing_id == "k2" and set(ra.keys) == {"k1", "k2"}
    assert all(ra.keys[k] != rb.keys[k] != MASTER.keys[k] for k in ra.keys)


def test_a_url_signed_for_one_appliance_is_refused_by_another():
    now = int(time.time())
    ams1, ams2 = derive_keyring(MASTER, "ams-1"), derive_keyring(MASTER, "ams-2")
    path, query = sign_path("/titles/a.mp4", ams1, now + 60).split("?", 1)
    assert verify(path, parse_query(query), ams1, now, None).key_id == "k2"
    with pytest.raises(BadSignature):
        verify(path, parse_query(query), ams2, now, None)
    # …and what ams-1's stolen keys sign is worthless to ams-2 as well.
    with pytest.raises(BadSignature):
        verify(path, parse_query(query), derive_keyring(MASTER, "ams-2"), now, None)


def test_derived_key_file_round_trips(tmp_path):
    ring = derive_keyring(MASTER, "lon-3")
    path = tmp_path / "keys.toml"
    path.write_text(keyfile_text(ring, "lon-3"))
    assert load_keyring(path) == ring and derived_for(path) == "lon-3"


def test_derived_keys_cache_follows_the_master():
    cache = DerivedKeys(MASTER)
    assert cache.for_holder("x") is cache.for_holder("x") and cache.for_holder("x") == derive_keyring(MASTER, "x")


@pytest.mark.parametrize("holder", ["", "x" * 81])
def test_holder_id_bounds(holder):
    with pytest.raises(ValueError):
        derive_secret(b"m" * 32, holder)


GOOD = f'signing = "k1"\n[keys]\nk1 = "{new_secret()}"\n'


@pytest.mark.parametrize("text, message", [
    (GOOD + 'k2 = "c2hvcnQ"\n', "keys.k2: secret shorter than 32 bytes"),
    (GOOD.replace('"k1"', '"k9"', 1), "signing: must name one of the keys (k1)"),
    (GOOD + "[extra]\n", "extra: unknown setting"),
    ('signing = "k1"\n', "keys: required"),
    ('signing = "k1"\n[keys]\n', "keys: must be a table with at least one key"),
    (GOOD.replace("[keys]", 'derived_for = 5\n[keys]'), "derived_for: must be a string"),
], ids=["short-secret", "signing-unknown", "unknown-key", "no-keys", "empty-keys", "derived-for-type"])
def test_key_file_errors_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_keyring(path)
    assert str(err.value) == f"key file {path}: {message}"
