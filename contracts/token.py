"""The URL token: what steering signs and every appliance verifies (Traffic Control url_sig shape).

A grant says "this path (or, for fill, any path) may be fetched until `expires_at`, optionally only
from clients inside `client_prefix`". Its signature is HMAC-SHA256 over a canonical, versioned string
with the key named by `key_id`, base64url without padding. In a URL it is four query parameters:

    /<file key>?e=<unix expiry>&k=<key id>[&c=<client prefix, e.g. 203.0.113.0/24>]&s=<signature>

Fill tokens (peer fill, pull-through, origin) have scope "fill", sign the path "*", name the fetching
appliance (`f=`), and travel as `t=fill&f=<holder>` plus the same parameters in the query or in an
`Authorization: CDN-Token <query>` header. They are signed with a key derived from the SOURCE's key for
that holder (`fill_keys`): the source re-derives it from its own key and the `f` it reads, steering
derives it from the master, and the holder is handed only that sub-key — so a fill credential opens
one source, for one fetcher, until it expires. A prefix, not an exact address, is bound because mobile
clients change address inside their carrier's prefix. Everything here is pure: the caller supplies
`now` and the client address.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Mapping
from urllib.parse import quote

from contracts.ids import KeyId

TOKEN_VERSION = "v1"
MAX_KEY_ID_LEN = 32
_EXPIRY = re.compile(r"0|[1-9][0-9]{0,11}")  # unix seconds, digits only, no sign or leading zero
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,%d}" % MAX_KEY_ID_LEN)
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of 32 bytes, no padding
_HOLDER = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # an appliance id
_DERIVE_SALT = b"opencdn/derived-key/v1"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Scope(str, Enum):
    PLAY = "play"
    FILL = "fill"


class TokenError(Exception):
    """Base of every token refusal; `reason` is the code the appliance logs and returns."""

    status_hint = 403
    reason = "token-invalid"


class TokenMissing(TokenError):
    reason = "token-missing"


class TokenMalformed(TokenError):
    reason = "token-malformed"


class TokenExpired(TokenError):
    reason = "token-expired"


class UnknownKey(TokenError):
    reason = "unknown-key"


class BadSignature(TokenError):
    """Forged, or signed for another path, expiry, prefix or scope: the HMAC cannot tell which."""

    reason = "bad-signature"


class WrongClient(TokenError):
    reason = "wrong-client"


class WrongScope(TokenError):
    reason = "wrong-scope"


@dataclass(frozen=True)
class Grant:
    path: str  # URL path as sent ("/titles/x/720p.mp4"), or "*" for fill scope
    expires_at: int  # unix seconds
    key_id: KeyId
    client_prefix: IPNetwork | None = None
    scope: Scope = Scope.PLAY
    holder: str | None = None  # fill scope: the appliance the token was minted for


def derive_secret(master: bytes, holder: str) -> bytes:
    """HKDF-SHA256 (RFC 5869), one 32-byte block: the key `holder` gets from `master`."""
    if not holder or len(holder) > 80:
        raise ValueError("holder: 1-80 characters")
    prk = hmac.new(_DERIVE_SALT, master, hashlib.sha256).digest()
    return hmac.new(prk, holder.encode() + b"\x01", hashlib.sha256).digest()


def client_prefix_for(address: str, v4_bits: int = 24, v6_bits: int = 48) -> IPNetwork:
    """The prefix a token binds for a client address (/24 and /48 by default)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    bits = v4_bits if ip.version == 4 else v6_bits
    return ipaddress.ip_network(f"{ip}/{bits}", strict=False)


def _message(grant: Grant) -> bytes:
    prefix = str(grant.client_prefix) if grant.client_prefix is not None else ""
    fields = (TOKEN_VERSION, grant.scope.value, grant.path, str(grant.expires_at), grant.key_id, prefix)
    return "|".join(fields + ((grant.holder,) if grant.holder is not None else ())).encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def signature(grant: Grant, secret: bytes) -> str:
    return _b64(hmac.new(secret, _message(grant), hashlib.sha256).digest())


def encode_query(grant: Grant, secret: bytes) -> str:
    """The query string (without '?') that carries `grant` and its signature."""
    parts = [f"e={grant.expires_at}", f"k={quote(grant.key_id, safe='')}"]
    if grant.client_prefix is not None:
        parts.append(f"c={grant.client_prefix}")
    if grant.scope is not Scope.PLAY:
        parts.append(f"t={grant.scope.value}")
    if grant.holder is not None:
        parts.append(f"f={grant.holder}")
    parts.append(f"s={signature(grant, secret)}")
    return "&".join(parts)


def sign_path(
    path: str,
    keys: "Keyring",
    expires_at: int,
    client_prefix: IPNetwork | None = None,
) -> str:
    """`path?token`: the signed path-and-query for one file, ready to append to a base URL."""
    grant = Grant(path=path, expires_at=expires_at, key_id=keys.signing_id, client_prefix=client_prefix)
    return f"{path}?{encode_query(grant, keys.secret(keys.signing_id))}"


class PathSigner:
    """`sign_path` for one key ring, made cheap for steering, which signs every URL it hands out
    with that appliance's own keys: the keyed HMAC state is built once and copied per URL, and the
    message is formatted in one step. Produces exactly what `sign_path` does (tested)."""

    __slots__ = ("_key_id", "_mac")

    def __init__(self, keys: "Keyring") -> None:
        self._key_id = keys.signing_id
        self._mac = hmac.new(keys.secret(keys.signing_id), digestmod=hashlib.sha256)

    def sign(self, path: str, expires_at: int, prefix: str) -> str:
        """`prefix`: str(client prefix), or "" for an unbound URL."""
        h = self._mac.copy()
        h.update(f"{TOKEN_VERSION}|play|{path}|{expires_at}|{self._key_id}|{prefix}".encode())
        sig = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode("ascii")
        bound = f"&c={prefix}" if prefix else ""
        return f"{path}?e={expires_at}&k={self._key_id}{bound}&s={sig}"


def fill_keys(source: "Keyring", holder: str) -> "Keyring":
    """What `holder` signs fill tokens for `source`'s owner with (the source derives the same)."""
    return Keyring({kid: derive_secret(secret, "fill:" + holder) for kid, secret in source.keys.items()},
                   source.signing_id)


def fill_token(keys: "Keyring", expires_at: int, holder: str) -> str:
    """A fill token for `holder`; `keys` are its fill keys for one source (`fill_keys`)."""
    grant = Grant(path="*", expires_at=expires_at, key_id=keys.signing_id, scope=Scope.FILL, holder=holder)
    return encode_query(grant, keys.secret(keys.signing_id))


AUTH_SCHEME = "CDN-Token"


def fill_authorization(keys: "Keyring", expires_at: int, holder: str) -> str:
    """The `Authorization` header value a fill client (peer, pull-through, agent) sends."""
    return f"{AUTH_SCHEME} {fill_token(keys, expires_at, holder)}"


def authorization_params(header: str | None) -> dict[str, str] | None:
    """The token parameters of an `Authorization: CDN-Token …` header, None for any other scheme."""
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != AUTH_SCHEME.lower():
        return None
    return parse_query(credentials.strip())


def parse_query(query: str) -> dict[str, str]:
    """Split a query string into the token's parameters; a repeated token parameter is malformed."""
    params: dict[str, str] = {}
    if not query:
        return params
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        if name in ("e", "k", "c", "s", "t", "f"):
            if name in params or not sep:
                raise TokenMalformed(f"token parameter {name!r} repeated or without a value")
            params[name] = value
    return params


@dataclass(frozen=True)
class Keyring:
    """Every key by id (all accepted) and the id of the one that signs."""

    keys: Mapping[KeyId, bytes]
    signing_id: KeyId

    def __post_init__(self) -> None:
        if self.signing_id not in self.keys:
            raise ValueError(f"signing key {self.signing_id!r} is not among the keys")

    def secret(self, key_id: KeyId) -> bytes:
        return self.keys[key_id]


def verify_signature(
    path: str,
    params: Mapping[str, str],
    keys: Keyring,
    scope: Scope = Scope.PLAY,
) -> Grant:
    """The grant the token in `params` carries, if its signature is good for `path`; else raise.
    Expiry and client are not checked here (see `check_grant`), so a good result may be memoised."""
    if "s" not in params and "e" not in params:
        raise TokenMissing("no token in the request")
    expiry, key_id, sig = params.get("e", ""), KeyId(params.get("k", "")), params.get("s", "")
    raw_prefix, raw_scope = params.get("c"), params.get("t")
    # One spelling per token: every field canonical, as `encode_query` writes it, so a token can't
    # be respelled into endlessly many URLs (`e=+0…`, `t=play`, an upper-case prefix) and nothing
    # odd (a non-ASCII signature) reaches the HMAC compare.
    if not (_EXPIRY.fullmatch(expiry) and _KEY_ID.fullmatch(key_id) and _SIGNATURE.fullmatch(sig)):
        raise TokenMalformed("token parameters malformed: e, k or s not in canonical form")
    try:
        client_prefix = ipaddress.ip_network(raw_prefix, strict=True) if raw_prefix is not None else None
        token_scope = Scope(raw_scope) if raw_scope is not None else Scope.PLAY
    except ValueError as exc:
        raise TokenMalformed(f"token parameters malformed: {exc}") from None
    if (client_prefix is not None and raw_prefix != str(client_prefix)) or raw_scope == Scope.PLAY.value:
        raise TokenMalformed("token parameters malformed: c or t not in canonical form")
    expires_at = int(expiry)
    holder = params.get("f")
    if (holder is not None) != (token_scope is Scope.FILL) or (holder is not None and not _HOLDER.fullmatch(holder)):
        raise TokenMalformed("token parameters malformed: f (the fetching appliance) goes with t=fill only")
    if token_scope is not scope:
        raise WrongScope(f"token scope {token_scope.value!r}, needed {scope.value!r}")
    secret = keys.keys.get(key_id)
    if secret is None:
        raise UnknownKey(f"key id {key_id!r} is not configured")
    if holder is not None:  # signed with our key derived for that fetcher
        secret = derive_secret(secret, "fill:" + holder)
    grant = Grant(
        path="*" if scope is Scope.FILL else path,
        expires_at=expires_at,
        key_id=key_id,
        client_prefix=client_prefix,
        scope=token_scope,
        holder=holder,
    )
    if not hmac.compare_digest(signature(grant, secret), sig):
        raise BadSignature("signature does not match")
    return grant


def check_grant(grant: Grant, now: float, client_address: str | None) -> Grant:
    """Raise unless the grant is still valid now and for this client."""
    if now > grant.expires_at:
        raise TokenExpired(f"token expired at {grant.expires_at}")
    prefix = grant.client_prefix
    if prefix is not None and not _inside(client_address, prefix):
        raise WrongClient(f"client {client_address} is outside {prefix}")
    return grant


def verify(
    path: str,
    params: Mapping[str, str],
    keys: Keyring,
    now: float,
    client_address: str | None,
    scope: Scope = Scope.PLAY,
) -> Grant:
    """Return the grant if the token in `params` allows `path` for this client now; else raise."""
    return check_grant(verify_signature(path, params, keys, scope), now, client_address)


@lru_cache(maxsize=4096)
def _address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _inside(address: str | None, prefix: IPNetwork) -> bool:
    ip = _address(address) if address is not None else None
    return ip is not None and ip.version == prefix.version and ip in prefix
