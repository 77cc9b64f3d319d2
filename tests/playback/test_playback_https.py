"""The player over HTTPS end to end, with real processes: headless Chromium (Debian's, driven by
Playwright) opens playback's https player page and plays the sample title with the shipped hls.js from
https appliances (TLS only) that steering — itself on https — names; the appliance serving it is killed
mid-play and the player goes on from the other one. The test CA is trusted by that browser alone, through
--ignore-certificate-errors-spki-list with the leaf's key hash (never --ignore-certificate-errors): the
same browser without it refuses the page. Also: steering's and playback's `[tls]` (contracts.tlsserve) —
check-config naming the file at fault, SIGHUP putting a renewed certificate on new connections while an
open one goes on, a broken renewal keeping the running certificate, a stalled handshake dropped."""
from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from https_testkit import reissue, spki_sha256, start_https_stack, tls_table
from playback_testkit import TITLE, origin_with_title, playback_toml
from test_playback_browser import ARGS, CHROMIUM, kill_tree, wait_js
from tests.playback.conftest import make_origin
from tests.steering.steer_helpers import AUTH, wait_until, write_setup
from tests.support.prom import value
from tests.support.tlsca import TestCA

import playwright.sync_api as playwright  # noqa: E402 - installed by scripts/setup (never `playwright install`)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def https_stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("playback-https")
    entry = make_origin(folder)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SSL_CERT_FILE", str(folder / "ca" / "ca.pem"))  # the daemons' outgoing calls (not Chromium's)
        stack = start_https_stack(folder, entry)
        try:
            yield stack
        finally:
            stack.stop()


def trusting_browser(p, stack):
    """Chromium trusting the stack's leaf key, and nothing else beyond its usual store."""
    spki = spki_sha256(stack.chain)
    return p.chromium.launch(executable_path=CHROMIUM, args=[*ARGS, f"--ignore-certificate-errors-spki-list={spki}"])


# ---- check-config ------------------------------------------------------------------------------------

def _steering_config(folder, tls: str):
    config = write_setup(folder / "steering")
    config.write_text(config.read_text() + tls)
    return ["steering.cli", "check-config", "-c", str(config)]


def _playback_config(folder, tls: str):
    config = folder / "playback.toml"
    config.write_text(playback_toml(origin_with_title(folder / "origin", "t1"), ["https://127.0.0.1:1"]) + tls)
    return ["playback.cli", "check-config", "-c", str(config)]


@pytest.mark.parametrize("service", [_steering_config, _playback_config], ids=["steering", "playback"])
@pytest.mark.parametrize("case, expected", [
    ("good", None),
    ("wrong-key", "tls.key_file: {other_key} is not the key of {chain}"),
    ("missing-key", "tls.key_file: {missing}: No such file or directory"),
    ("not-pem", "tls.cert_file: {garbage} holds no PEM certificate"),
    ("unknown-setting", "tls.cert: unknown setting"),
], ids=["good", "wrong-key", "missing-key", "not-pem", "unknown-setting"])
def test_check_config_loads_the_certificate(service, case, expected, tmp_path):
    ca = TestCA(tmp_path / "ca")
    chain, key = ca.issue("localhost", "127.0.0.1")
    _, other_key = ca.issue("other.test")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    missing = tmp_path / "missing.key"
    table = {"good": tls_table(chain, key), "wrong-key": tls_table(chain, other_key),
             "missing-key": tls_table(chain, missing), "not-pem": tls_table(garbage, key),
             "unknown-setting": f'\n[tls]\ncert = "{chain}"\ncert_file = "{chain}"\nkey_file = "{key}"\n'}[case]
    out = subprocess.run([sys.executable, "-m", *service(tmp_path, table)], capture_output=True, text=True,
                         timeout=60)
    if expected is None:
        assert out.returncode == 0, out.stderr
        assert f"https: {chain} with {key}; names localhost, 127.0.0.1" in out.stdout
    else:
        assert out.returncode == 2, out.stdout + out.stderr
        want = expected.format(other_key=other_key, chain=chain, missing=missing, garbage=garbage)
        assert want in out.stderr, out.stderr


# ---- the browser -------------------------------------------------------------------------------------

def test_browser_without_the_ca_refuses_the_https_page(https_stack):
    """The trust is the flag's, for that browser: without it the same page fails on its certificate."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            with pytest.raises(playwright.Error, match="ERR_CERT_AUTHORITY_INVALID"):
                browser.new_page().goto(https_stack.playback.url + f"/play/{TITLE}")
        finally:
            browser.close()


def test_browser_plays_over_https_and_fails_over_when_the_serving_appliance_dies(https_stack, artifacts):
    stack = https_stack
    by_host = stack.host_of()
    victim = None
    with playwright.sync_playwright() as p:
        browser = trusting_browser(p, stack)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            insecure: list[str] = []
            page.on("console", lambda m: insecure.append(m.text) if "Mixed Content" in m.text else None)
            page.on("request", lambda r: insecure.append(r.url) if r.url.startswith("http:") else None)
            page.goto(stack.playback.url + f"/play/{TITLE}?buffer=4")  # a short buffer: the kill must matter
            assert page.evaluate("location.protocol") == "https:" and page.evaluate("window.isSecureContext")
            page.evaluate("""() => {
                window.fragUrls = [];
                window.hls.on(Hls.Events.FRAG_LOADED, (_, d) => window.fragUrls.push(d.frag.url));
            }""")
            wait_js(page, "document.getElementById('video').currentTime > 2 && window.fragUrls.length > 0", 30)
            served = page.evaluate("window.playerState.servedBy")
            victim = by_host[served]  # one of the appliances' TLS ports
            kill_tree(stack.apps[victim].proc.pid)
            killed_at = page.evaluate("document.getElementById('video').currentTime")
            killed_frags = page.evaluate("window.playerState.frags")
            # playback goes on well past what was buffered when the appliance died, from the other one
            wait_js(page, f"document.getElementById('video').currentTime > {killed_at + 8}", 40)
            state = page.evaluate("window.playerState")
            urls = page.evaluate("window.fragUrls")
            assert state["frags"] > killed_frags
            assert by_host[state["hosts"][-1]] != victim, state
            assert all(u.startswith("https://127.0.0.1:") for u in urls), urls
            assert {by_host[h] for h in state["hosts"]} == set(stack.apps), state  # both appliances served
            assert not insecure, insecure
            assert not any("fatal" in e for e in state["errors"] if "bufferStalled" not in e), state["errors"]
            page.screenshot(path=str(artifacts / "playback-https-player.png"))
        finally:
            browser.close()
            if victim is not None:
                stack.apps[victim].proc.wait(5)
                stack.restart(victim)


# ---- steering's and playback's TLS listener ----------------------------------------------------------

def _peer(port: int, ca_file: str) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=ca_file)
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")


def _serial(sock: ssl.SSLSocket) -> int:
    return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True)).serial_number


def _get(sock: ssl.SSLSocket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        head += chunk
    return head.split(b"\r\n", 1)[0]


def test_sighup_puts_a_renewed_certificate_on_new_connections_and_keeps_open_ones(https_stack):
    stack = https_stack
    chain, key = stack.control
    daemons = {"playback": (stack.playback.proc, stack.playback.port, stack.playback.events),
               "steering": (stack.steering.proc, stack.steering.port, stack.steering.events)}
    for name, (proc, port, events) in daemons.items():
        before = _peer(port, stack.verify)
        assert before.version() in ("TLSv1.2", "TLSv1.3") and before.selected_alpn_protocol() in (None, "http/1.1")
        old = _serial(before)
        renewed = reissue(stack.ca, chain, key)
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(events("tls-reloaded")) >= 1, timeout_s=10, every_s=0.05)
        after = _peer(port, stack.verify)
        assert (_serial(after), old) == (renewed, old) and renewed != old, name
        for sock in (before, after):  # the connection opened before the reload still answers
            assert _get(sock, "/healthz").startswith(b"HTTP/1.1 200"), name
            sock.close()
        # a broken renewal (a key that is not the certificate's) keeps the running certificate
        good = key.read_bytes()
        key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        try:
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda: events("tls-reload-failed"), timeout_s=10, every_s=0.05)
            assert "is not the key of" in events("tls-reload-failed")[-1]["error"]
            still = _peer(port, stack.verify)
            assert _serial(still) == renewed and _get(still, "/healthz").startswith(b"HTTP/1.1 200"), name
            still.close()
            # the supervised `tls-reload` task failed: counted (and logged with its traceback)
            metrics = requests.get(f"https://127.0.0.1:{port}/metrics", headers=AUTH, verify=stack.verify,
                                   timeout=10).text
            assert value(metrics, f"{name}_task_failures_total", task="tls-reload") >= 1, name
        finally:
            key.write_bytes(good)


def test_a_stalled_handshake_is_dropped_and_plain_http_gets_no_answer(https_stack):
    """handshake_timeout_s (3 s here) closes a connection that never says hello; plain HTTP to the TLS
    port is not served."""
    for port in (https_stack.playback.port, https_stack.steering.port):
        with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
            assert raw.recv(1) == b""  # closed by the server, well before our 15 s
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert requests.get(f"https://127.0.0.1:{port}/healthz", verify=https_stack.verify, timeout=10).ok
