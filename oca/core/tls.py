"""TLS decisions, made purely: which certificate answers a server name (SNI), what a failed
handshake counts as, and whether a certificate is near its end. The shell (oca/http/tls.py,
oca/tlsconf.py) reads files, builds SSL contexts and does what these return.

Server names follow RFC 6066 §3 (SNI carries a DNS host name, no trailing dot, case-insensitive)
and RFC 6125 §6.4.3 for wildcards: `*.example.net` covers exactly one label (`a.example.net`, not
`example.net` nor `a.b.example.net`).
"""
from __future__ import annotations

import ipaddress
from enum import Enum
from typing import Mapping, NamedTuple, Sequence


class SniVerdict(NamedTuple):
    index: int | None  # the certificate to present; None: refuse (unrecognized_name alert)
    known: bool  # the name matched a certificate (False for no SNI or an unknown name)


def choose_certificate(server_name: str | None, names: Sequence[Sequence[str]], reject_unknown: bool) -> SniVerdict:
    """The certificate for `server_name` among certificates serving `names` (one tuple per
    certificate, in config order). No SNI (a client given an IP address) gets the first
    certificate; an unknown name is refused when `reject_unknown`, else gets the first too."""
    if server_name is None or _is_address(server_name):  # RFC 6066 forbids literals; wrk sends them anyway
        return SniVerdict(0, False)
    name = server_name.rstrip(".").lower()
    wildcard = "*." + name.split(".", 1)[1] if "." in name else None
    fallback = None
    for i, cert_names in enumerate(names):
        for candidate in cert_names:
            c = candidate.lower()
            if c == name:
                return SniVerdict(i, True)
            if fallback is None and wildcard is not None and c == wildcard:
                fallback = i  # an exact name elsewhere wins over a wildcard
    if fallback is not None:
        return SniVerdict(fallback, True)
    return SniVerdict(None if reject_unknown else 0, False)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


class HandshakeOutcome(str, Enum):
    """Why a TLS connection ended before its first request; each is counted
    (oca_tls_handshakes_total{outcome=...})."""
    OK = "ok"
    PLAIN_HTTP = "plain_http"  # an http:// request sent to the TLS port
    TIMEOUT = "timeout"  # the handshake stalled past its deadline (slowloris at the TLS layer)
    UNKNOWN_SNI = "unknown_sni"  # a server name no certificate carries
    RESET = "reset"  # the client went away mid-handshake
    FAILED = "failed"  # anything else: no shared cipher or version, a malformed hello, ...


OUTCOMES = tuple(o.value for o in HandshakeOutcome)


def classify_failure(exc_type: str, reason: str | None, message: str, unknown_sni: bool) -> HandshakeOutcome:
    """What a failed handshake counts as, from the exception's class name, its OpenSSL reason
    code (ssl.SSLError.reason) and message, and whether our SNI callback refused the name."""
    if unknown_sni:
        return HandshakeOutcome.UNKNOWN_SNI
    if reason == "HTTP_REQUEST" or reason == "HTTPS_PROXY_REQUEST":
        return HandshakeOutcome.PLAIN_HTTP
    if exc_type in ("TimeoutError", "ConnectionAbortedError") and "longer than" in message:
        return HandshakeOutcome.TIMEOUT
    if exc_type in ("ConnectionResetError", "BrokenPipeError", "SSLEOFError", "SSLZeroReturnError",
                    "ConnectionAbortedError") or reason in ("UNEXPECTED_EOF_WHILE_READING",):
        return HandshakeOutcome.RESET
    return HandshakeOutcome.FAILED


class ExpiryState(str, Enum):
    OK = "ok"
    EXPIRING = "expiring"  # inside the warning window: renew it
    EXPIRED = "expired"


def expiry_state(not_after: float, now: float, warning_s: float) -> ExpiryState:
    left = not_after - now
    if left <= 0:
        return ExpiryState.EXPIRED
    return ExpiryState.EXPIRING if left <= warning_s else ExpiryState.OK


def expiry_warnings(certificates: Mapping[str, float], now: float, warning_s: float) -> list[str]:
    """One line per certificate (by its first name) that is expired or inside the warning window."""
    out = []
    for name, not_after in certificates.items():
        state = expiry_state(not_after, now, warning_s)
        if state is ExpiryState.EXPIRED:
            out.append(f"certificate {name} expired {int(now - not_after)} s ago")
        elif state is ExpiryState.EXPIRING:
            out.append(f"certificate {name} expires in {int(not_after - now)} s")
    return out
