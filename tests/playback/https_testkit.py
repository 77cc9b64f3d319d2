"""An all-HTTPS playback stack for the browser tests over TLS: a throwaway CA (tests.support.tlsca) whose
one leaf (localhost, 127.0.0.1) serves both appliances (their `[tls]`, TLS only: `plain_port = false`) and,
from a copy of its files (which the reload test replaces), steering and playback (their `[tls]`,
contracts.tlsserve); the fleet's base URLs are https, so steering emits https URLs. Who trusts the CA, and how:
  - the daemons (appliance heartbeats and playback's steer calls go to https steering): SSL_CERT_FILE in
    their environment, set by the caller for the stack's life (a restarted appliance inherits it too);
  - this process's clients: `verify=` the CA file, per request;
  - Chromium: `--ignore-certificate-errors-spki-list` with the leaf's SPKI hash — that browser, that key.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from contracts.keys import derive_keyring, keyfile_text, load_keyring
from playback_testkit import PlaybackProcess, playback_toml
from tests.oca.conftest import Appliance, write_config
from tests.steering.steer_helpers import AUTH, SITES, SteeringProcess, fleet_toml, free_port, wait_until, write_setup
from tests.support.tlsca import TestCA

INTERVAL_S = 0.5


def spki_sha256(chain: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)) of a chain file's first certificate: the form Chromium's
    --ignore-certificate-errors-spki-list takes (as `openssl x509 -pubkey | openssl pkey -pubin -outform
    der | openssl dgst -sha256 -binary | base64` prints it)."""
    cert = x509.load_pem_x509_certificate(chain.read_bytes())
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def reissue(ca: TestCA, chain: Path, key: Path, names: tuple[str, ...] = ("localhost", "127.0.0.1")) -> int:
    """A new leaf for the same key (so an SPKI pin still holds) replaces `chain` at once (rename, as
    certificate renewals do); returns its serial number."""
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    now = dt.datetime.now(dt.timezone.utc)
    leaf = TestCA._sign(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]), private.public_key(),
                        ca.inter.subject, ca.inter_key, now - dt.timedelta(minutes=5), now + dt.timedelta(days=30),
                        names=names)
    fresh = chain.with_name(chain.name + ".new")
    fresh.write_bytes(leaf.public_bytes(Encoding.PEM) + ca.inter.public_bytes(Encoding.PEM))
    os.replace(fresh, chain)
    return leaf.serial_number


def tls_table(chain: Path, key: Path) -> str:
    """contracts.tlsserve's [tls] (steering, playback)."""
    return f'\n[tls]\ncert_file = "{chain}"\nkey_file = "{key}"\nhandshake_timeout_s = 3.0\n'


def appliance_tls(chain: Path, key: Path, port: int) -> str:
    """oca.tlsconf's [tls]: HTTPS only, on a port chosen beforehand (the fleet's base URL names it)."""
    return (f'\n[tls]\nport = {port}\nplain_port = false\nhandshake_timeout_s = 5.0\n'
            f'[[tls.certificates]]\ncert = "{chain}"\nkey = "{key}"\n')


@dataclass
class HttpsStack:
    folder: Path
    ca: TestCA
    chain: Path
    key: Path
    control: tuple[Path, Path]  # steering's and playback's copy of chain and key
    entry: dict
    steering: SteeringProcess
    playback: PlaybackProcess | None = None
    apps: dict[str, Appliance] = field(default_factory=dict)
    tls_ports: dict[str, int] = field(default_factory=dict)

    @property
    def verify(self) -> str:
        return str(self.ca.root_path)

    def host_of(self) -> dict[str, str]:
        """Appliance name by the host:port its https URLs name."""
        return {f"127.0.0.1:{port}": name for name, port in self.tls_ports.items()}

    def locations(self) -> dict[str, list[str]]:
        files = [r["key"] for r in self.entry["renditions"]]
        r = requests.post(self.steering.url + "/v1/steer", json={"client": "127.0.0.1", "files": files},
                          headers=AUTH, timeout=5, verify=self.verify)
        return {k: v["locations"] for k, v in r.json()["files"].items()} if r.ok else {}

    def wait_steered(self, n: int, timeout_s: float = 30) -> None:
        wait_until(lambda: (locs := self.locations()) and all(len(v) == n for v in locs.values()),
                   timeout_s=timeout_s, every_s=0.1)

    def restart(self, name: str) -> None:
        app = self.apps[name]
        if app.proc is not None and app.proc.poll() is None:
            return
        app.start()
        self.wait_steered(2)

    def stop(self) -> None:
        if self.playback is not None:
            self.playback.stop()
        for app in self.apps.values():
            try:
                app.stop(timeout=15)
            except Exception:  # noqa: BLE001 - stopping everything regardless
                if app.proc is not None:
                    app.proc.kill()
        self.steering.stop()


def start_appliance(stack: HttpsStack, name: str, site: str) -> Appliance:
    root = stack.folder / name
    root.mkdir()
    keys = load_keyring(stack.folder / "steering" / "keys.toml")
    (root / "keys.toml").write_text(keyfile_text(derive_keyring(keys, name), name))  # derived for it alone
    extra = (f'\n[steering]\nurls = ["{stack.steering.url}"]\nreport_interval_s = {INTERVAL_S}\n'
             + appliance_tls(stack.chain, stack.key, stack.tls_ports[name]))
    config = write_config(root, extra=extra)
    config.write_text(config.read_text().replace('id = "test-oca"', f'id = "{name}"')
                      .replace('site = "lab"', f'site = "{site}"'))
    app = Appliance(root, config)
    app.start()
    return app


def start_https_stack(folder: Path, entry: dict) -> HttpsStack:
    """Steering, two appliances (one per site) holding the title's files, playback — all on HTTPS with
    one CA. `folder/origin` holds the ingested title (`entry` its catalog entry). The caller sets
    SSL_CERT_FILE to `folder/ca/ca.pem` first (see the module's docstring); the CA is made here."""
    ca = TestCA(folder / "ca")
    chain, key = ca.issue("localhost", "127.0.0.1", stem="server")
    control = (folder / "control.pem", folder / "control.key")
    shutil.copy(chain, control[0])
    shutil.copy(key, control[1])
    sites = {s: SITES[s] for s in ("ams", "fra")}
    tls_ports = {f"{s}-1": free_port() for s in sites}
    config = write_setup(folder / "steering", fleet_toml(sites, per_site=1,
                                                          base=lambda a: f"https://127.0.0.1:{tls_ports[a]}"),
                         extra="log_decisions = false\n",
                         health={"report_interval_s": INTERVAL_S, "missed_reports": 3, "up_after_reports": 2})
    config.write_text(config.read_text() + tls_table(*control))
    steering = SteeringProcess(config)
    steering.url = f"https://127.0.0.1:{steering.port}"
    stack = HttpsStack(folder, ca, chain, key, control, entry, steering, tls_ports=tls_ports)
    try:
        for name in tls_ports:
            stack.apps[name] = start_appliance(stack, name, name[:3])
            for r in entry["renditions"]:
                stack.apps[name].put((folder / "origin" / r["key"]).read_bytes(), r["key"])
        pb_config = folder / "playback.toml"
        pb_config.write_text(playback_toml(folder / "origin", [steering.url]) + tls_table(*control))
        stack.playback = PlaybackProcess(pb_config)
        stack.playback.url = f"https://127.0.0.1:{stack.playback.port}"
        stack.wait_steered(2)
    except BaseException:
        stack.stop()
        raise
    return stack
