"""Who is calling a control-plane endpoint: every request that mints URLs, reads the fleet, a manifest
or demand names its caller, or is refused (401).

Two kinds of caller:
- services and operators (playback, the fill planner, an operator's script) present a bearer token,
  `Authorization: Bearer <token>`. The server's callers file holds only the token's SHA-256 and the
  roles it grants:

      [callers.playback]
      token_sha256 = "<64 hex>"          # steering callers add playback   prints the token once
      roles = ["steer", "fleet"]

- appliances sign the request with their own derived keys (contracts.keys), so no extra secret is
  provisioned: `Authorization: CDN-Appliance a=<id>,k=<key id>,t=<unix time>,s=<base64url HMAC-SHA256
  of "appliance-request-v1|METHOD|TARGET|t">`, fresh within `max_skew_s`. An appliance caller has the
  role "appliance" and may read only what is its own (the server checks the id).

Pure: the caller supplies the clock and the key lookup. Errors carry `status_hint` and `reason`.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from contracts.token import Keyring
from contracts.structconf import ConfigError

ROLES = frozenset({"steer", "fleet", "manifests", "demand", "withdraw"})
APPLIANCE_ROLE = "appliance"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_APPLIANCE_AUTH = re.compile(r"CDN-Appliance a=([A-Za-z0-9_.-]{1,64}),k=([A-Za-z0-9_-]{1,32}),t=([0-9]{1,12}),"
                             r"s=([A-Za-z0-9_-]{43})")
_PREFIX = b"appliance-request-v1|"


class Unauthorized(Exception):
    status_hint = 401
    reason = "unauthorized"


class Forbidden(Unauthorized):
    status_hint = 403
    reason = "forbidden"


@dataclass(frozen=True)
class Caller:
    name: str  # "playback", "appliance:ams-1"
    roles: frozenset[str]
    appliance: str | None = None

    def require(self, role: str) -> "Caller":
        if role not in self.roles:
            raise Forbidden(f"caller {self.name!r} may not {role}")
        return self


def new_token() -> tuple[str, str]:
    """(token, its sha256 hex): the token goes to the caller once, the hash into the callers file."""
    token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return token, hashlib.sha256(token.encode()).hexdigest()


def parse_callers(mapping: Mapping[str, Any], where: str = "callers") -> dict[str, Caller]:
    """`[callers.NAME]` tables → callers by token hash; errors name the dotted key."""
    table = mapping.get("callers", {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table of callers")
    out: dict[str, Caller] = {}
    for name, spec in table.items():
        key = f"{where}.{name}"
        if not _NAME.fullmatch(name) or not isinstance(spec, Mapping):
            raise ConfigError(f"{key}: a caller is a table named with 1-64 of [A-Za-z0-9_.-]")
        unknown = set(spec) - {"token_sha256", "roles"}
        if unknown:
            raise ConfigError(f"{key}.{sorted(unknown)[0]}: unknown setting")
        digest, roles = spec.get("token_sha256"), spec.get("roles")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ConfigError(f"{key}.token_sha256: must be 64 lowercase hex digits (sha256 of the token)")
        if not isinstance(roles, list) or not roles or not set(roles) <= ROLES:
            raise ConfigError(f"{key}.roles: must list some of {', '.join(sorted(ROLES))}")
        if digest in out:
            raise ConfigError(f"{key}.token_sha256: the same token as {out[digest].name!r}")
        out[digest] = Caller(name, frozenset(roles))
    return out


def appliance_authorization(keys: Keyring, appliance: str, method: str, target: str, now: float) -> str:
    """The header an appliance sends (`target` = path and query, as sent)."""
    t = str(int(now))
    return f"CDN-Appliance a={appliance},k={keys.signing_id},t={t},s={_mac(keys.secret(keys.signing_id), method, target, t)}"


def authenticate(header: str | None, method: str, target: str, now: float, callers: Mapping[str, Caller],
                 keys_for: Callable[[str], Keyring | None], max_skew_s: float = 300.0) -> Caller:
    """The caller a request's Authorization header proves; Unauthorized otherwise."""
    if not header or len(header) > 512:
        raise Unauthorized("Authorization: required (Bearer token or CDN-Appliance signature)")
    if header.startswith("Bearer "):
        digest = hashlib.sha256(header[7:].strip().encode()).hexdigest()
        for known, caller in callers.items():  # constant-time per entry; the list is short
            if hmac.compare_digest(known, digest):
                return caller
        raise Unauthorized("Authorization: unknown bearer token")
    m = _APPLIANCE_AUTH.fullmatch(header)
    if m is None:
        raise Unauthorized("Authorization: not a Bearer token or a CDN-Appliance signature")
    appliance, key_id, t, sig = m.groups()
    if abs(now - int(t)) > max_skew_s:
        raise Unauthorized(f"Authorization: signed at {t}, more than {max_skew_s:.0f} s from now")
    keys = keys_for(appliance)
    secret = keys.keys.get(key_id) if keys is not None else None  # type: ignore[arg-type]
    if secret is None or not hmac.compare_digest(_mac(secret, method, target, t), sig):
        raise Unauthorized("Authorization: appliance signature does not verify")
    return Caller(f"appliance:{appliance}", frozenset({APPLIANCE_ROLE}), appliance)


def _mac(secret: bytes, method: str, target: str, t: str) -> str:
    digest = hmac.new(secret, _PREFIX + f"{method}|{target}|{t}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


__all__ = ["Caller", "Unauthorized", "Forbidden", "ROLES", "APPLIANCE_ROLE", "new_token", "parse_callers",
           "appliance_authorization", "authenticate"]
