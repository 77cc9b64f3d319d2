"""`origin serve` on HTTPS ([tls], contracts.tlsserve): fills and pulls reach it with their tokens
encrypted, a client verifying the chain gets the same ranges as over plain HTTP, plain HTTP gets no
answer, and check-config loads the certificate (naming the file at fault)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from origin_testkit import OriginProcess

from contracts.keys import load_keyring, write_new_keyfile
from contracts.token import fill_keys, fill_token
from tests.support.tlsca import TestCA

KEY = "files/t1/v1111111111111111/a.mp4"
DATA = bytes(range(256)) * 40


def write_config(tmp_path: Path, chain: Path, key: Path) -> Path:
    media = tmp_path / "media"
    (media / KEY).parent.mkdir(parents=True)
    (media / KEY).write_bytes(DATA)
    write_new_keyfile(tmp_path / "keys.toml")
    conf = tmp_path / "origin.toml"
    conf.write_text(f'[origin]\nlocation = "{media}"\n\n[serve]\nport = 0\nkey_file = "keys.toml"\n\n'
                    f'[tls]\ncert_file = "{chain}"\nkey_file = "{key}"\n')
    return conf


@pytest.fixture()
def ca(tmp_path) -> TestCA:
    return TestCA(tmp_path / "ca")


def test_ranges_over_https_with_a_verified_chain(tmp_path, ca):
    conf = write_config(tmp_path, *ca.issue("127.0.0.1"))
    proc = OriginProcess(conf)
    try:
        assert proc.url.startswith("https://127.0.0.1:")
        token = fill_token(fill_keys(load_keyring(tmp_path / "keys.toml"), "ams-1"), int(time.time()) + 600, "ams-1")
        auth = {"Authorization": f"CDN-Token {token}"}
        r = requests.get(f"{proc.url}/{KEY}", headers={**auth, "Range": "bytes=100-1099"}, verify=ca.root_path,
                         timeout=10)
        assert (r.status_code, r.content) == (206, DATA[100:1100])
        assert r.headers["Content-Range"] == f"bytes 100-1099/{len(DATA)}"
        assert requests.get(f"{proc.url}/{KEY}", verify=ca.root_path, timeout=10).status_code in (401, 403)
        with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust the CA
            requests.get(f"{proc.url}/healthz", timeout=10)
        plain = proc.url.replace("https://", "http://")
        with pytest.raises(requests.exceptions.ConnectionError):  # TLS only: plain HTTP gets no answer
            requests.get(f"{plain}/healthz", timeout=10)
        assert requests.get(f"{proc.url}/healthz", verify=ca.root_path, timeout=10).text == "ok\n"
    finally:
        assert proc.stop() == 0


def check_config(conf: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "origin.cli", "check-config", "-c", str(conf)],
                          capture_output=True, text=True, timeout=60)


def test_check_config_loads_the_certificate(tmp_path, ca):
    chain, key = ca.issue("127.0.0.1")
    ok = check_config(write_config(tmp_path / "good", chain, key))
    assert ok.returncode == 0 and f"https: {chain} with {key}" in ok.stdout, ok.stderr
    _, other_key = ca.issue("origin.test")
    bad = check_config(write_config(tmp_path / "bad", chain, other_key))
    assert bad.returncode == 2 and f"tls.key_file: {other_key} is not the key of {chain}" in bad.stderr
