"""Steering emits https URLs for appliances whose base URL is https, with the same token: a real
`steering serve` and a real `oca serve` with [tls] (a throwaway CA's certificate for its name,
keys derived from steering's master), reporting to it. The URL steered to that appliance keeps
the base URL's scheme, host and port, its token verifies with that appliance's keys (and no
other's), and a client that verifies the chain streams the file from it; the http appliance
beside it still gets an http URL."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from contracts.keys import derive_keyring, load_keyring
from contracts.token import BadSignature, parse_query, verify
from steer_helpers import AUTH, SITES, SteeringProcess, fleet_toml, free_port, heartbeat, wait_until, write_setup
from tests.oca.conftest import Appliance, write_config
from tests.support.tlsca import TestCA

pytestmark = pytest.mark.timeout(120)

KEY = "t/https/720p.mp4"
DATA = os.urandom(40_000)
HTTPS_NAME = "ams-1.oca.test"


class _Conn(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 whatever the URL's host (which is the SNI and the name the chain must carry)."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _start_tls_appliance(folder: Path, steering_url: str, master: Path, ca: TestCA, tls_port: int) -> Appliance:
    root = folder / "ams-1"
    root.mkdir()
    subprocess.run([sys.executable, "-m", "steering.cli", "keys", "derive", "--master", str(master),
                    "--appliance", "ams-1", "-o", str(root / "keys.toml")], check=True, capture_output=True, timeout=60)
    chain, key = ca.issue(HTTPS_NAME)
    config = write_config(root, extra=f'\n[steering]\nurls = ["{steering_url}"]\nreport_interval_s = 0.5\n'
                                      f'\n[tls]\nport = {tls_port}\nplain_port = false\n'
                                      f'[[tls.certificates]]\ncert = "{chain}"\nkey = "{key}"\n')
    config.write_text(config.read_text().replace('id = "test-oca"', 'id = "ams-1"').replace('site = "lab"',
                                                                                          'site = "ams"'))
    app = Appliance(root, config)
    app.start()
    return app


@pytest.fixture
def fleet(tmp_path):
    tls_port = free_port()
    sites = {"ams": SITES["ams"], "fra": SITES["fra"]}
    bases = {"ams-1": f"https://{HTTPS_NAME}:{tls_port}", "ams-2": "http://ams-2.oca.test:8080",
             "fra-1": "http://fra-1.oca.test:8080", "fra-2": "https://fra-2.oca.test"}
    config = write_setup(tmp_path, fleet_toml(sites, per_site=2, base=bases.__getitem__),
                         extra="log_decisions = false\n", health={"report_interval_s": 0.5, "missed_reports": 1000})
    steering = SteeringProcess(config)
    ca = TestCA(tmp_path / "ca")
    app = None
    try:
        for name in ("ams-2", "fra-1", "fra-2"):  # the others report too (as fakes), holding the file
            assert steering.post_heartbeat(heartbeat(name, name[:3], added=[KEY])).status_code == 200
        app = _start_tls_appliance(tmp_path, steering.url, tmp_path / "keys.toml", ca, tls_port)
        app.put(DATA, KEY)
        yield steering, app, ca, tls_port, load_keyring(tmp_path / "keys.toml")
    finally:
        if app is not None and app.proc is not None and app.proc.poll() is None:
            app.proc.send_signal(signal.SIGTERM)
            try:
                app.proc.wait(15)
            except subprocess.TimeoutExpired:
                app.proc.kill()
        steering.stop()


def steer(url: str, client: str) -> list[str]:
    r = requests.get(url + "/v1/steer", params={"file": KEY, "client": client}, headers=AUTH, timeout=5)
    r.raise_for_status()
    return r.json()["locations"]


def test_https_appliances_get_https_urls_with_the_same_token(fleet):
    steering, app, ca, tls_port, master = fleet
    # 127.0.0.1 is localised to the default site (ams); the https appliance reports the file, and
    # steering names it among the candidates once its heartbeat is in.
    urls = wait_until(lambda: (u := steer(steering.url, "127.0.0.1")) and any(HTTPS_NAME in x for x in u) and u,
                      timeout_s=20)
    by_host = {urlsplit(u).hostname: urlsplit(u) for u in urls}
    ours = by_host[HTTPS_NAME]
    assert (ours.scheme, ours.port, ours.path) == ("https", tls_port, "/" + KEY)
    assert (by_host["ams-2.oca.test"].scheme, by_host["ams-2.oca.test"].port) == ("http", 8080)
    for host, parts in by_host.items():  # every base URL kept as it is, https ones included
        assert f"{parts.scheme}://{parts.netloc}" == {
            HTTPS_NAME: f"https://{HTTPS_NAME}:{tls_port}", "ams-2.oca.test": "http://ams-2.oca.test:8080",
            "fra-1.oca.test": "http://fra-1.oca.test:8080", "fra-2.oca.test": "https://fra-2.oca.test"}[host]

    # The token: the same as an http URL's, signed with the keys derived for ams-1 and no other's.
    params = parse_query(ours.query)
    assert params["c"] == "127.0.0.0/24"
    verify(ours.path, params, derive_keyring(master, "ams-1"), now=time.time(), client_address="127.0.0.1")
    with pytest.raises(BadSignature):
        verify(ours.path, params, derive_keyring(master, "ams-2"), now=time.time(), client_address="127.0.0.1")

    # And it streams: over TLS from the appliance, the chain and the name verified by the client.
    ctx = ssl.create_default_context(cafile=str(ca.root_path))

    def fetched() -> tuple[int, bytes] | None:
        conn = _Conn(HTTPS_NAME, tls_port, context=ctx, timeout=10)
        try:
            conn.request("GET", f"{ours.path}?{ours.query}", headers={"Range": "bytes=0-9999"})
            resp = conn.getresponse()
            return (resp.status, resp.read()) if resp.status == 206 else None
        finally:
            conn.close()

    assert wait_until(fetched, timeout_s=10) == (206, DATA[:10000])
