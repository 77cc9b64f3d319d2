"""Key files: several secrets by id, and the id that signs. Rotation is: add the new key, then
switch `signing`, then drop the old one; readers re-read the file.

    signing = "k2"
    [keys]
    k1 = "<base64url of at least 32 random bytes>"
    k2 = "..."

Secrets by place: steering and the planner hold the fleet's MASTER key file. Every appliance (and
`origin serve`) holds only keys DERIVED for it — HKDF-SHA256 of each master key with the holder's id
as context, same key ids, same signing id — in a file of the same format with `derived_for = "ID"`
(`steering keys derive --appliance ID`). Steering signs an appliance's URLs, its fill tokens and its
manifests with that appliance's derived key and checks its heartbeats with it, so a stolen
appliance can forge nothing for any other: its keys open nothing else.
"""
from __future__ import annotations

import base64
import os
import secrets
import tomllib
from pathlib import Path
from typing import Any, Mapping

from contracts.ids import KeyId
from contracts.structconf import Conf, ConfigError, convert, invalid
from contracts.token import MAX_KEY_ID_LEN, Keyring, PathSigner, derive_secret

MIN_SECRET_BYTES = 32
MAX_KEYS = 16


class KeyFile(Conf):
    """A key file as written (contracts.structconf: unknown keys refused, errors naming the dotted key);
    `keyring()` decodes the secrets."""

    keys: dict[str, str]  # id -> base64url (no padding) of at least MIN_SECRET_BYTES random bytes
    signing: str  # the id of the key that signs
    derived_for: str | None = None  # the holder the keys were derived for (`steering keys derive`)

    def __post_init__(self) -> None:
        if not self.keys:
            raise invalid("keys", "must be a table with at least one key")
        if len(self.keys) > MAX_KEYS:
            raise invalid("keys", f"at most {MAX_KEYS} keys")
        if self.signing not in self.keys:
            raise invalid("signing", f"must name one of the keys ({', '.join(self.keys)})")

    def keyring(self) -> Keyring:
        """The keys decoded; a ConfigError names the key at fault ("keys.k1: not valid base64url")."""
        return Keyring(keys={KeyId(k): _secret(k, v) for k, v in self.keys.items()}, signing_id=KeyId(self.signing))


def _secret(key_id: str, encoded: str) -> bytes:
    if not (0 < len(key_id) <= MAX_KEY_ID_LEN) or not key_id.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"keys.{key_id}: key id must be 1-{MAX_KEY_ID_LEN} of [A-Za-z0-9_-]")
    try:
        secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except ValueError:
        raise ConfigError(f"keys.{key_id}: not valid base64url") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"keys.{key_id}: secret shorter than {MIN_SECRET_BYTES} bytes")
    return secret


def parse_keyring(mapping: Mapping[str, Any], where: str = "") -> Keyring:
    """The keyring of a key file's mapping; `where` (the file) heads any error: "where: keys.k1: ..."."""
    try:
        return convert(KeyFile, mapping).keyring()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None


def derive_keyring(master: Keyring, holder: str) -> Keyring:
    """Every master key derived for `holder`, under the same ids; the same signing id."""
    return Keyring({kid: derive_secret(secret, holder) for kid, secret in master.keys.items()}, master.signing_id)


class DerivedKeys:
    """Derived keyrings (and URL signers) by holder, computed once per master ring (HKDF is cheap,
    not free)."""

    def __init__(self, master: Keyring) -> None:
        self.master = master
        self._rings: dict[str, Keyring] = {}
        self._signers: dict[str, PathSigner] = {}

    def signer(self, holder: str) -> PathSigner:
        signer = self._signers.get(holder)
        if signer is None:
            if len(self._signers) > 100_000:
                self._signers.clear()
            signer = self._signers[holder] = PathSigner(self.for_holder(holder))
        return signer

    def for_holder(self, holder: str) -> Keyring:
        ring = self._rings.get(holder)
        if ring is None:
            if len(self._rings) > 100_000:  # ids come from the fleet file; never let them pile up
                self._rings.clear()
            ring = self._rings[holder] = derive_keyring(self.master, holder)
        return ring


def keyfile_text(keys: Keyring, derived_for: str | None = None) -> str:
    """A key file's TOML for `keys` (what `steering keys derive` writes)."""
    head = f'derived_for = "{derived_for}"\n' if derived_for else ""
    body = "".join(f'{kid} = "{base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}"\n'
                   for kid, secret in sorted(keys.keys.items()))
    return f'{head}signing = "{keys.signing_id}"\n\n[keys]\n{body}'


def derived_for(path: Path) -> str | None:
    """The holder a key file was derived for (None for a master or hand-made file)."""
    try:
        with open(path, "rb") as fh:
            value = tomllib.load(fh).get("derived_for")
    except (OSError, tomllib.TOMLDecodeError):
        return None
    return value if isinstance(value, str) else None


def load_keyring(path: Path) -> Keyring:
    try:
        with open(path, "rb") as fh:
            mapping = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"key file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"key file {path}: not valid TOML: {exc}") from None
    return parse_keyring(mapping, where=f"key file {path}")


def new_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(MIN_SECRET_BYTES)).rstrip(b"=").decode()


def write_new_keyfile(path: Path, key_id: str = "k1") -> Keyring:
    """Create a key file with one fresh key, readable by its owner only."""
    text = f'signing = "{key_id}"\n\n[keys]\n{key_id} = "{new_secret()}"\n'
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return load_keyring(path)
