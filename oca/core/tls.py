"""TLS decisions, made purely: what a connection's first bytes are (a TLS ClientHello, and the
server name it carries, or plain HTTP sent to the TLS port), which certificate answers a server
name (SNI), what a failed handshake counts as, and whether a certificate is near its end. The
shell (oca/http/tls.py, oca/tlsconf.py) reads sockets and files, builds SSL contexts and does what
these return.

Server names follow RFC 6066 §3 (SNI carries a DNS host name, no trailing dot, case-insensitive)
and RFC 6125 §6.4.3 for wildcards: `*.example.net` covers exactly one label (`a.example.net`, not
`example.net` nor `a.b.example.net`). The ClientHello is read as RFC 8446 §4.1.2 (and RFC 5246
§7.4.1.2, the same layout) frames it in a record (§5.1); a hello this reader cannot take apart is
left to OpenSSL, which decides the same through the SNI callback.
"""
from __future__ import annotations

import ipaddress
from enum import Enum
from typing import Mapping, NamedTuple, Sequence


# ---- the first bytes -------------------------------------------------------------------------------

class HelloState(str, Enum):
    MORE = "more"  # the first record is not all here yet: read more
    NOT_TLS = "not-tls"  # not a TLS handshake record: plain HTTP (or anything else) sent to the TLS port
    READ = "read"  # a ClientHello, read: `server_name` is its SNI host name (None: it names none)
    OPAQUE = "opaque"  # TLS, but not a hello this reader takes apart: OpenSSL decides


class HelloScan(NamedTuple):
    state: HelloState
    server_name: str | None = None


HANDSHAKE_RECORD = 0x16  # ContentType handshake (RFC 8446 §5.1)
_CLIENT_HELLO = 1
_SERVER_NAME_EXTENSION = 0
_HOST_NAME = 0
_MAX_RECORD = (1 << 14) + 256  # a plaintext record's limit (2^14), with room for any legacy slack
MAX_HELLO_BYTES = 5 + _MAX_RECORD  # the most the shell buffers before handing the bytes to OpenSSL


def scan_client_hello(data: bytes) -> HelloScan:
    """What a new connection's first bytes are. Only the first record is read: a ClientHello split
    over several records (allowed, never seen from browsers or curl) is OPAQUE."""
    if not data:
        return HelloScan(HelloState.MORE)
    if data[0] != HANDSHAKE_RECORD:
        return HelloScan(HelloState.NOT_TLS)
    if len(data) < 5:
        return HelloScan(HelloState.MORE)
    length = int.from_bytes(data[3:5], "big")
    if length > _MAX_RECORD or length < 4:
        return HelloScan(HelloState.OPAQUE)
    if len(data) < 5 + length:
        return HelloScan(HelloState.MORE)
    body = data[5:5 + length]
    hello_length = int.from_bytes(body[1:4], "big")
    if body[0] != _CLIENT_HELLO or 4 + hello_length > len(body):
        return HelloScan(HelloState.OPAQUE)
    try:
        return HelloScan(HelloState.READ, _server_name(body[4:4 + hello_length]))
    except (IndexError, ValueError):
        return HelloScan(HelloState.OPAQUE)


def _server_name(hello: bytes) -> str | None:
    """The host name of a ClientHello's server_name extension (RFC 6066 §3), None without one;
    ValueError (or IndexError) for a hello that does not add up."""
    at = 2 + 32  # legacy_version, random
    at += 1 + hello[at]  # legacy_session_id<0..32>
    at += 2 + int.from_bytes(hello[at:at + 2], "big")  # cipher_suites<2..2^16-2>
    at += 1 + hello[at]  # legacy_compression_methods<1..2^8-1>
    if at == len(hello):
        return None  # no extensions (TLS 1.2 allows it)
    end = at + 2 + int.from_bytes(hello[at:at + 2], "big")
    if end != len(hello):
        raise ValueError("extensions do not end with the hello")
    at += 2
    while at < end:
        kind = int.from_bytes(hello[at:at + 2], "big")
        size = int.from_bytes(hello[at + 2:at + 4], "big")
        at += 4
        if at + size > end:
            raise ValueError("an extension runs past the hello")
        if kind == _SERVER_NAME_EXTENSION:
            return _host_name(hello[at:at + size])
        at += size
    return None


def _host_name(ext: bytes) -> str | None:
    listed = int.from_bytes(ext[0:2], "big")
    if 2 + listed != len(ext):
        raise ValueError("server_name list length")
    at = 2
    while at < len(ext):
        kind, size = ext[at], int.from_bytes(ext[at + 1:at + 3], "big")
        at += 3
        if at + size > len(ext) or size == 0:
            raise ValueError("server_name entry length")
        if kind == _HOST_NAME:
            return ext[at:at + size].decode("ascii")  # an A-label; anything else: OpenSSL decides
        at += size
    return None


def alert_record(description: int) -> bytes:
    """A fatal alert (RFC 8446 §6) as its own plaintext record: what a server sends before its
    first handshake message when it refuses a ClientHello. 112: unrecognized_name (RFC 6066 §3)."""
    return bytes((21, 3, 3, 0, 2, 2, description))


UNRECOGNIZED_NAME = 112


# ---- which certificate -----------------------------------------------------------------------------

class SniPolicy(NamedTuple):
    no_name: int  # the certificate for a client that names none (no SNI, or an address literal)
    unknown: int | None  # the certificate for a name no certificate carries; None: refuse it


def sni_policy(count: int, default: int | None, reject_unknown: bool | None) -> SniPolicy:
    """What names no certificate carries get, among `count` certificates of which `default` (an
    index, or None) is marked as the default. Unset `reject_unknown` means: the default certificate
    when there is an obvious one (marked, or the only one), else refuse — as nginx answers with its
    default server's certificate and refuses only with `ssl_reject_handshake`. True refuses unknown
    names whatever the default; False gives them the default (marked, else the first)."""
    fallback = default if default is not None else 0
    if reject_unknown is None:
        unknown = default if default is not None else (0 if count == 1 else None)
    else:
        unknown = None if reject_unknown else fallback
    return SniPolicy(fallback, unknown)


class SniVerdict(NamedTuple):
    index: int | None  # the certificate to present; None: refuse (unrecognized_name alert)
    known: bool  # the name matched a certificate (False for no SNI or an unknown name)


def choose_certificate(server_name: str | None, names: Sequence[Sequence[str]], policy: SniPolicy) -> SniVerdict:
    """The certificate for `server_name` among certificates serving `names` (one tuple per
    certificate, in config order); a client naming none, or a name none carries, as `policy` says."""
    if server_name is None or _is_address(server_name):  # RFC 6066 forbids literals; wrk sends them anyway
        return SniVerdict(policy.no_name, False)
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
    return SniVerdict(policy.unknown, False)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return False


# ---- outcomes and expiry -------------------------------------------------------------------------

class HandshakeOutcome(str, Enum):
    """Why a TLS connection ended before its first request; each is counted
    (oca_tls_handshakes_total{outcome=...})."""
    OK = "ok"
    PLAIN_HTTP = "plain_http"  # an http:// request sent to the TLS port (answered 400 in clear text)
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
