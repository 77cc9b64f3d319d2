"""`[tls]` of oca.toml, and the SSL contexts made from it.

    [tls]
    listen = "0.0.0.0"             # default: http.listen
    port = 8443                    # 0: any free port
    plain_port = true              # keep serving plain HTTP on http.port too; false: TLS only
    handshake_timeout_s = 10.0     # the whole handshake must finish within this; default http.header_timeout_s
    reject_unknown_sni = true      # a server name no certificate carries: unrecognized_name alert
    expiry_warning_s = 1209600     # /v1/health warns this long before a certificate ends (14 days)
    ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20"  # TLS 1.2 suites (AEAD only); TLS 1.3's are all AEAD
    reload_check_s = 5.0           # how often workers look for changed certificate files (and SIGHUP)

    [[tls.certificates]]           # one per appliance name; several: chosen by SNI, first is the default
    cert = "/etc/oca/tls/ams-1.pem"  # the leaf, then its intermediates (a chain file, as nginx takes it)
    key = "/etc/oca/tls/ams-1.key"
    names = ["ams-1.oca.example.net"]  # default: the certificate's DNS names (subjectAltName)

TLS 1.2 and 1.3 only, ALPN `http/1.1`, no renegotiation, no compression. Contexts are made per
worker and rebuilt on reload; a connection keeps the context it was accepted with, so a reload
never drops one. A bad file on reload keeps the last good contexts (and says so).

Kernel TLS: with the Linux `tls` ULP and an OpenSSL built with it, `ssl.OP_ENABLE_KTLS` (Python
3.12+) would move record encryption into the kernel and let `sendfile` work again. `ktls_status()`
reports what this machine lacks; the body path stays user space (pread into a reused buffer,
encrypted by OpenSSL) until a machine that has it can test the other one.
"""
from __future__ import annotations

import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.tomlconf import ConfigError, Section
from oca.core.tls import choose_certificate, expiry_state, expiry_warnings

AEAD_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
DEFAULT_EXPIRY_WARNING_S = 14 * 86400.0


@dataclass(frozen=True)
class CertificateConfig:
    cert: Path
    key: Path
    names: tuple[str, ...] = ()  # empty: the certificate's own DNS names


@dataclass(frozen=True)
class TlsConfig:
    certificates: tuple[CertificateConfig, ...]
    listen: str = "0.0.0.0"
    port: int = 8443
    plain_port: bool = True
    handshake_timeout_s: float = 10.0
    reject_unknown_sni: bool = True
    expiry_warning_s: float = DEFAULT_EXPIRY_WARNING_S
    ciphers: str = AEAD_CIPHERS
    reload_check_s: float = 5.0


def parse_tls(s: Section, base: Path | None, http_listen: str, header_timeout_s: float) -> TlsConfig:
    certs = []
    for c in s.sections("certificates"):
        certs.append(CertificateConfig(cert=c.path("cert", base=base), key=c.path("key", base=base),
                                       names=tuple(n.lower().rstrip(".") for n in c.str_list("names", []))))
        c.done()
    if not certs:
        raise ConfigError(f"{s.key('certificates')}: at least one [[tls.certificates]] (cert and key files)")
    cfg = TlsConfig(
        certificates=tuple(certs),
        listen=s.str("listen", http_listen),
        port=s.int("port", 8443, min=0, max=65535),
        plain_port=s.bool("plain_port", True),
        handshake_timeout_s=s.float("handshake_timeout_s", header_timeout_s, min=0.1),
        reject_unknown_sni=s.bool("reject_unknown_sni", True),
        expiry_warning_s=s.float("expiry_warning_s", DEFAULT_EXPIRY_WARNING_S, min=0),
        ciphers=s.str("ciphers", AEAD_CIPHERS),
        reload_check_s=s.float("reload_check_s", 5.0, min=0.1),
    )
    s.done()
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(cfg.ciphers)
    except ssl.SSLError:
        raise ConfigError(f"{s.key('ciphers')}: OpenSSL accepts none of {cfg.ciphers!r}") from None
    return cfg


# ---- certificates --------------------------------------------------------------------------------

@dataclass(frozen=True)
class CertificateFacts:
    path: Path
    names: tuple[str, ...]  # DNS names it serves (config's, else its subjectAltName)
    not_after: float  # epoch seconds
    mtimes: tuple[float, float]  # of the cert and key files, to notice a change


def _decode(path: Path) -> dict[str, Any]:
    """The leaf certificate of a chain file as the ssl module decodes a peer's certificate. CPython's
    `_test_decode_cert` is the one stdlib reader of a certificate file (used by its own test suite
    since 2.7); the `cryptography` package is the fallback should it ever go."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is not None:
        return decode(str(path))
    from cryptography import x509  # pragma: no cover - only without the stdlib helper

    cert = x509.load_pem_x509_certificate(path.read_bytes())
    try:
        dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    return {"notAfter": cert.not_valid_after_utc.strftime("%b %d %H:%M:%S %Y GMT"),
            "subjectAltName": tuple(("DNS", n) for n in dns)}


def certificate_facts(c: CertificateConfig, where: str) -> CertificateFacts:
    try:
        decoded = _decode(c.cert)
        mtimes = (os.stat(c.cert).st_mtime, os.stat(c.key).st_mtime)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"{where}.cert: cannot read {c.cert}: {exc}") from None
    names = c.names or tuple(v.lower() for k, v in decoded.get("subjectAltName", ()) if k == "DNS")
    return CertificateFacts(c.cert, names, ssl.cert_time_to_seconds(decoded["notAfter"]), mtimes)


# ---- contexts ------------------------------------------------------------------------------------

def server_context(cfg: TlsConfig, c: CertificateConfig, where: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(cfg.ciphers)
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(c.cert, c.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}: cannot load {c.cert} with key {c.key}: {exc}") from None
    return ctx


class Contexts:
    """One generation of SSL contexts (one per certificate); the first is the listener's and picks
    the others by SNI. A refused name fails the handshake with reason CALLBACK_FAILED (counted as
    unknown_sni by the listener)."""

    def __init__(self, cfg: TlsConfig) -> None:
        where = [f"tls.certificates[{i}]" for i in range(len(cfg.certificates))]
        self.facts = tuple(certificate_facts(c, w) for c, w in zip(cfg.certificates, where))
        self.contexts = tuple(server_context(cfg, c, w) for c, w in zip(cfg.certificates, where))
        names = [f.names for f in self.facts]
        reject = cfg.reject_unknown_sni

        def sni(sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> int | None:
            verdict = choose_certificate(server_name, names, reject)
            if verdict.index is None:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            if verdict.index:
                sslobj.context = self.contexts[verdict.index]
            return None

        self.contexts[0].sni_callback = sni

    @property
    def default(self) -> ssl.SSLContext:
        return self.contexts[0]

    def changed(self, cfg: TlsConfig) -> bool:
        """A certificate or key file was replaced since these contexts were made."""
        for c, f in zip(cfg.certificates, self.facts):
            try:
                if (os.stat(c.cert).st_mtime, os.stat(c.key).st_mtime) != f.mtimes:
                    return True
            except OSError:
                return False  # mid-replacement: look again next time
        return False


# ---- health and metrics (the supervisor's view) --------------------------------------------------

def ktls_status() -> dict[str, Any]:
    """Whether kernel TLS could carry bodies here, and why not."""
    missing = []
    if not hasattr(ssl, "OP_ENABLE_KTLS"):
        missing.append("this Python's ssl module has no OP_ENABLE_KTLS (Python 3.12+)")
    try:
        ulps = Path("/proc/sys/net/ipv4/tcp_available_ulp").read_text().split()
    except OSError:
        ulps = []
    if "tls" not in ulps:
        missing.append("the kernel has no `tls` ULP (modprobe tls)")
    return {"available": not missing, "missing": missing}


class CertificateWatch:
    """The supervisor's reading of the certificate files (for /metrics and /v1/health), re-read
    when a file changes."""

    def __init__(self, cfg: TlsConfig) -> None:
        self.cfg = cfg
        self._facts: list[CertificateFacts | None] = [None] * len(cfg.certificates)
        self.errors: list[str] = []

    def facts(self) -> list[CertificateFacts]:
        self.errors = []
        for i, c in enumerate(self.cfg.certificates):
            f = self._facts[i]
            try:
                stale = f is None or (os.stat(c.cert).st_mtime, os.stat(c.key).st_mtime) != f.mtimes
                if stale:
                    self._facts[i] = certificate_facts(c, f"tls.certificates[{i}]")
            except (OSError, ConfigError) as exc:
                self.errors.append(str(exc))
        return [f for f in self._facts if f is not None]

    def gauges(self, now: float | None = None) -> list[tuple[str, str, dict[str, str], float]]:
        now = time.time() if now is None else now
        return [("oca_tls_cert_expiry_seconds", "Seconds until the certificate ends (negative: expired).",
                 {"cert": str(f.path), "name": f.names[0] if f.names else ""}, round(f.not_after - now))
                for f in self.facts()]

    def health(self, now: float | None = None, port: int | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        facts = self.facts()
        ktls = ktls_status()
        by_name = {(f.names[0] if f.names else str(f.path)): f.not_after for f in facts}
        return {
            "port": port,
            "plain_port": self.cfg.plain_port,
            "body_path": "userspace",  # pread into a reused buffer, OpenSSL encrypts (no kTLS path shipped)
            "ktls": ktls,
            "certificates": [{"cert": str(f.path), "names": list(f.names), "not_after": int(f.not_after),
                              "expires_in_s": int(f.not_after - now),
                              "state": expiry_state(f.not_after, now, self.cfg.expiry_warning_s).value}
                             for f in facts],
            "warnings": expiry_warnings(by_name, now, self.cfg.expiry_warning_s) + self.errors,
        }
