"""`[tls]` of oca.toml, and the SSL contexts made from it.

    [tls]
    listen = "0.0.0.0"             # default: http.listen
    port = 8443                    # 0: any free port
    plain_port = true              # keep serving plain HTTP on http.port too; false: TLS only
    handshake_timeout_s = 10.0     # the whole handshake must finish within this; default http.header_timeout_s
    # reject_unknown_sni = true    # unset (the default): see "Server names" below
    expiry_warning_s = 1209600     # /v1/health warns this long before a certificate ends (14 days)
    ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20"  # TLS 1.2 suites (AEAD only); TLS 1.3's are all AEAD
    reload_check_s = 5.0           # how often workers look for changed certificate files (and SIGHUP)

    [[tls.certificates]]           # one per appliance name; several: chosen by SNI
    cert = "/etc/oca/tls/ams-1.pem"  # the leaf, then its intermediates (a chain file, as nginx takes it)
    key = "/etc/oca/tls/ams-1.key"
    names = ["ams-1.oca.example.net"]  # default: the certificate's DNS names (subjectAltName)
    default = false                # true on (at most) one: what clients naming no known name get

Server names (SNI) pick the certificate; a wildcard name covers one label. A client that names none
(no SNI; an address given as the host) gets the default certificate: the one marked `default =
true`, else the first. A name no certificate carries is what operators differ on, so:
  - one certificate, or one marked `default = true`: that certificate (as nginx answers with its
    default server's); the client's own name check then fails or not, as it would against nginx;
  - several certificates and none marked default: refused — the `unrecognized_name` alert (RFC 6066
    §3), the connection closed, counted as oca_tls_handshakes_total{outcome="unknown_sni"} (nginx's
    `ssl_reject_handshake on` in a default server);
  - `reject_unknown_sni = true` refuses unknown names in every case (the default certificate then
    serves only clients that name none); `false` never refuses (the default certificate answers).
The listener reads the ClientHello itself (oca.core.tls.scan_client_hello) before OpenSSL does, so
a refusal is the alert on the wire; a hello it cannot take apart goes to OpenSSL, whose SNI callback
decides the same (the alert is then not flushed: uvloop closes the connection at once).

Bad first bytes: a connection whose first byte is not a TLS handshake record (0x16) is answered
`400` in clear text ("The plain HTTP request was sent to HTTPS port", as nginx says), closed and
counted (outcome="plain_http"). A handshake not finished within `handshake_timeout_s` (nothing sent,
half a hello, a stall later) is closed (outcome="timeout"); a client gone mid-handshake is
outcome="reset".

TLS 1.2 and 1.3 only, ALPN `http/1.1`, no renegotiation, no compression. Contexts are made per
worker and rebuilt on reload; a connection keeps the context it was accepted with, so a reload
never drops one. A bad file on reload keeps the last good contexts (and says so). `oca check-config`
loads every certificate with its key first (`check_certificates`: readable, the key the
certificate's, not expired; a warning within `expiry_warning_s`), naming the file at fault.

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
from typing import Annotated, Any, Mapping

from msgspec import Meta
from msgspec.structs import force_setattr, replace

from contracts.structconf import Conf, ConfigError, convert, invalid
from oca.core.tls import ExpiryState, SniVerdict, choose_certificate, expiry_state, expiry_warnings, sni_policy

AEAD_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
DEFAULT_EXPIRY_WARNING_S = 14 * 86400.0


class CertificateConfig(Conf):
    """[[tls.certificates]]: a chain file and its key; `names` (lower case, no trailing dot) overrides
    the certificate's own DNS names for SNI."""

    cert: Path
    key: Path
    names: tuple[str, ...] = ()  # empty: the certificate's own DNS names
    default: bool = False  # what clients naming no known name get (see the module's doc)

    def __post_init__(self) -> None:
        force_setattr(self, "names", tuple(n.lower().rstrip(".") for n in self.names))


class TlsConfig(Conf):
    """[tls]. `listen` and `handshake_timeout_s` left out take [http]'s listen and header_timeout_s
    (parse_tls fills them in)."""

    certificates: Annotated[tuple[CertificateConfig, ...], Meta(
        min_length=1, extra={"says": "at least one [[tls.certificates]] (cert and key files)"})]
    listen: str | None = None
    port: Annotated[int, Meta(ge=0, le=65535)] = 8443
    plain_port: bool = True
    handshake_timeout_s: Annotated[float, Meta(ge=0.1)] | None = None
    reject_unknown_sni: bool | None = None  # None: refuse unknown names only without a default certificate
    expiry_warning_s: Annotated[float, Meta(ge=0)] = DEFAULT_EXPIRY_WARNING_S
    ciphers: str = AEAD_CIPHERS
    reload_check_s: Annotated[float, Meta(ge=0.1)] = 5.0

    def __post_init__(self) -> None:
        defaults = [i for i, c in enumerate(self.certificates) if c.default]
        if len(defaults) > 1:
            raise invalid(f"certificates[{defaults[1]}].default", "only one certificate can be the default "
                          f"(tls.certificates[{defaults[0]}].default is already)")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(self.ciphers)
        except ssl.SSLError:
            raise invalid("ciphers", f"OpenSSL accepts none of {self.ciphers!r}") from None


def parse_tls(table: Mapping[str, Any], base: Path | None, http_listen: str, header_timeout_s: float) -> TlsConfig:
    """[tls] as read from oca.toml (relative paths against `base`), its left-out settings from [http]."""
    cfg = convert(TlsConfig, table, where="tls", base=base)
    return replace(cfg, listen=http_listen if cfg.listen is None else cfg.listen,
                   handshake_timeout_s=header_timeout_s if cfg.handshake_timeout_s is None else cfg.handshake_timeout_s)


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
        ctx.load_cert_chain(c.cert, c.key, password=_no_password)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(_load_error(c, where, exc)) from None
    return ctx


def _no_password() -> bytes:
    return b""  # an encrypted key fails to load rather than OpenSSL prompting on a terminal


def _load_error(c: CertificateConfig, where: str, exc: Exception) -> str:
    """What went wrong loading a certificate with its key, naming the file to look at."""
    text = str(exc)
    if "KEY_VALUES_MISMATCH" in text:
        return f"{where}.key: {c.key} is not the private key of {c.cert} (the chain file's first certificate)"
    if isinstance(exc, ssl.SSLError) and ("PEM" in text or "DECRYPT" in text.upper()):
        return f"{where}.key: {c.key}: not an unencrypted PEM private key ({text})"
    return f"{where}: cannot load {c.cert} with key {c.key}: {text}"


def check_certificates(cfg: TlsConfig, now: float | None = None) -> list[str]:
    """What `oca check-config` asks of [tls]: each certificate and key file readable, the key the
    certificate's, the certificate not expired. ConfigError names the file; returns warning lines
    (a certificate ending within `expiry_warning_s`, 14 days unless set; one naming no DNS name)."""
    now = time.time() if now is None else now
    warnings = []
    for i, c in enumerate(cfg.certificates):
        where = f"tls.certificates[{i}]"
        for field, path in (("cert", c.cert), ("key", c.key)):
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(f"{where}.{field}: cannot read {path}: {exc.strerror or exc}") from None
        facts = certificate_facts(c, where)
        server_context(cfg, c, where)
        ends = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(facts.not_after))
        state = expiry_state(facts.not_after, now, cfg.expiry_warning_s)
        if state is ExpiryState.EXPIRED:
            raise ConfigError(f"{where}.cert: {c.cert} expired on {ends}")
        if state is ExpiryState.EXPIRING:
            warnings.append(f"warning: {where}.cert: {c.cert} expires on {ends}, in "
                            f"{(facts.not_after - now) / 86400:.1f} days: renew it")
        if not facts.names:
            warnings.append(f"warning: {where}: {c.cert} carries no DNS name and `names` is not set: "
                            "SNI never picks it")
    return warnings


class Contexts:
    """One generation of SSL contexts (one per certificate); the first is the listener's and picks
    the others by SNI (`choose`, which the listener also asks of the ClientHello it reads first). A
    name refused here fails the handshake with reason CALLBACK_FAILED (counted as unknown_sni by
    the listener)."""

    def __init__(self, cfg: TlsConfig) -> None:
        where = [f"tls.certificates[{i}]" for i in range(len(cfg.certificates))]
        self.facts = tuple(certificate_facts(c, w) for c, w in zip(cfg.certificates, where))
        self.contexts = tuple(server_context(cfg, c, w) for c, w in zip(cfg.certificates, where))
        self.names = [f.names for f in self.facts]
        default = next((i for i, c in enumerate(cfg.certificates) if c.default), None)
        self.policy = sni_policy(len(cfg.certificates), default, cfg.reject_unknown_sni)

        def sni(sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> int | None:
            verdict = self.choose(server_name)
            if verdict.index is None:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            if verdict.index:
                sslobj.context = self.contexts[verdict.index]
            return None

        self.contexts[0].sni_callback = sni

    def choose(self, server_name: str | None) -> SniVerdict:
        return choose_certificate(server_name, self.names, self.policy)

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
