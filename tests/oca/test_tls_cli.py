"""The command line with [tls]: `oca check-config` loads every certificate with its key (readable,
matching, not expired; a warning inside the expiry window) and names the file at fault; `oca url`
prints the https URL (TLS port, the certificate's name) when TLS is on, the plain one otherwise,
and `--scheme` picks when both listeners are on — each URL fetched with a client that verifies
the chain."""
from __future__ import annotations

import datetime as dt
import subprocess
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.oca.conftest import free_port
from tests.oca.test_tls import NAME_A, NAME_B, put, tls_section
from tests.support.tlsca import TestCA, _name

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def ca(tmp_path) -> TestCA:
    return TestCA(tmp_path / "ca")


def check_config(app) -> subprocess.CompletedProcess:
    return app.cli("check-config", check=False)


# ---- check-config ------------------------------------------------------------------------------

def test_check_config_loads_the_certificates(make_appliance, ca):
    app = make_appliance(extra=tls_section(ca.issue(NAME_A), ca.issue(NAME_B, rsa=True)), start=False)
    out = check_config(app)
    assert out.returncode == 0, out.stderr
    assert "tls: 2 certificate(s)" in out.stdout and "warning: tls." not in out.stderr


def test_check_config_warns_of_a_certificate_near_its_end(make_appliance, ca):
    chain, key = ca.issue(NAME_A, days=3)
    app = make_appliance(extra=tls_section((chain, key)), start=False)
    out = check_config(app)
    assert out.returncode == 0, out.stderr
    (line,) = [x for x in out.stderr.splitlines() if x.startswith("warning: tls.")]
    assert line.startswith(f"warning: tls.certificates[0].cert: {chain} expires on ") and "renew it" in line


def _expired(ca: TestCA) -> tuple:
    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = TestCA._sign(_name(NAME_A), key.public_key(), ca.inter.subject, ca.inter_key,
                        now - dt.timedelta(days=90), now - dt.timedelta(days=1), names=(NAME_A,))
    chain, key_path = ca.dir / "expired.pem", ca.dir / "expired.key"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.inter.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return chain, key_path


@pytest.mark.parametrize("fault", ["expired", "wrong-key", "missing-key", "not-a-key", "not-a-certificate"])
def test_check_config_names_the_file_at_fault(make_appliance, ca, fault):
    good = ca.issue(NAME_B)
    chain, key = ca.issue(NAME_A)
    if fault == "expired":
        chain, key = _expired(ca)
        expected = f"tls.certificates[1].cert: {chain} expired on "
    elif fault == "wrong-key":
        key = good[1]
        expected = f"tls.certificates[1].key: {key} is not the private key of {chain}"
    elif fault == "missing-key":
        key.unlink()
        expected = f"tls.certificates[1].key: cannot read {key}: No such file or directory"
    elif fault == "not-a-key":
        key.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
        expected = f"tls.certificates[1].key: {key}: not an unencrypted PEM private key"
    else:
        chain.write_text("not a certificate\n")
        expected = f"tls.certificates[1].cert: cannot read {chain}"
    app = make_appliance(extra=tls_section(good, (chain, key)), start=False)
    out = check_config(app)
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1].startswith(f"oca check-config: {expected}"), out.stderr


# ---- url -----------------------------------------------------------------------------------------

def _fixed_ports(app, tls_port: int) -> None:
    """A known plain port too (the test config asks for any free one, which `oca url` cannot know)."""
    text = app.config_path.read_text()
    app.config_path.write_text(text.replace("port = 0", f"port = {free_port()}", 1)
                               .replace("\n[tls]\nport = 0\n", f"\n[tls]\nport = {tls_port}\n"))


def _curl(url: str, ca: TestCA, port: int) -> subprocess.CompletedProcess:
    host = urlsplit(url).hostname
    return subprocess.run(["curl", "-sS", "--fail", "--cacert", str(ca.root_path), "--resolve",
                           f"{host}:{port}:127.0.0.1", "-o", "/dev/null", "-w", "%{http_code}", url],
                          capture_output=True, text=True, timeout=30)


def test_oca_url_prints_the_https_url_and_scheme_picks(make_appliance, ca):
    tls_port = free_port()
    app = make_appliance(extra=tls_section(ca.issue(NAME_A)), start=False)
    _fixed_ports(app, tls_port)
    app.start()
    put(app, ca, b"u" * 5000, "titles/u/v.mp4")

    url = app.cli("url", "titles/u/v.mp4").stdout.strip()
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.port, parts.path) == ("https", NAME_A, tls_port, "/titles/u/v.mp4")
    assert _curl(url, ca, tls_port).stdout == "200"
    assert app.cli("url", "titles/u/v.mp4", "--scheme", "https").stdout.startswith(f"https://{NAME_A}:{tls_port}/")

    plain = app.cli("url", "titles/u/v.mp4", "--scheme", "http").stdout.strip()
    parts = urlsplit(plain)
    assert (parts.scheme, parts.hostname, parts.port) == ("http", "127.0.0.1", app.port)
    assert _curl(plain, ca, app.port).stdout == "200"


def test_oca_url_refuses_a_listener_that_is_off(make_appliance, ca):
    tls_only = make_appliance(extra=tls_section(ca.issue(NAME_A), plain_port=False), start=False)
    out = tls_only.cli("url", "titles/u/v.mp4", "--scheme", "http", check=False)
    assert out.returncode == 2 and "tls.plain_port = false" in out.stderr
    assert tls_only.cli("url", "titles/u/v.mp4").stdout.startswith(f"https://{NAME_A}:")

    plain_only = make_appliance(start=False)
    out = plain_only.cli("url", "titles/u/v.mp4", "--scheme", "https", check=False)
    assert out.returncode == 2 and "no [tls] in the config" in out.stderr
    assert plain_only.cli("url", "titles/u/v.mp4").stdout.startswith("http://127.0.0.1:")


def test_oca_url_dev_names_the_running_dev_appliances_https_port(tmp_path, ca):
    """`oca serve --dev DIR --tls-cert ...` says its TLS port and certificate in dev.json, so `oca url
    --dev DIR` prints an https URL a verifying client fetches."""
    import sys

    from tests.support.oca_proc import OcaProcess

    root = tmp_path / "media"
    (root / "titles/u").mkdir(parents=True)
    (root / "titles/u/v.mp4").write_bytes(b"d" * 4000)
    chain, key = ca.issue(NAME_A)
    with OcaProcess(root, workers=1, tls_cert=chain, tls_key=key) as app:
        url = subprocess.run([sys.executable, "-m", "oca.cli", "url", "--dev", str(root), "titles/u/v.mp4"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.port) == ("https", NAME_A, app.tls_port)
        assert _curl(url, ca, app.tls_port).stdout == "200"
