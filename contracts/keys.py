"""Key files: several secrets by id, and the id that signs. Shared by steering (signs), appliances
(verify with every listed key, so a rotation is: add the new key everywhere, then switch `signing`,
then drop the old one) and the dev mode, which generates one.

    signing = "k2"
    [keys]
    k1 = "<base64url of at least 32 random bytes>"
    k2 = "..."
"""
from __future__ import annotations

import base64
import os
import secrets
import tomllib
from pathlib import Path
from typing import Any, Mapping

from contracts.ids import KeyId
from contracts.token import MAX_KEY_ID_LEN, Keyring
from contracts.tomlconf import ConfigError

MIN_SECRET_BYTES = 32
MAX_KEYS = 16


def parse_keyring(mapping: Mapping[str, Any], where: str = "") -> Keyring:
    prefix = f"{where}." if where else ""
    keys_table = mapping.get("keys")
    if not isinstance(keys_table, Mapping) or not keys_table:
        raise ConfigError(f"{prefix}keys: must be a table with at least one key")
    if len(keys_table) > MAX_KEYS:
        raise ConfigError(f"{prefix}keys: at most {MAX_KEYS} keys")
    keys: dict[KeyId, bytes] = {}
    for key_id, encoded in keys_table.items():
        if not (0 < len(key_id) <= MAX_KEY_ID_LEN) or not key_id.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{prefix}keys.{key_id}: key id must be 1-{MAX_KEY_ID_LEN} of [A-Za-z0-9_-]")
        if not isinstance(encoded, str):
            raise ConfigError(f"{prefix}keys.{key_id}: must be a base64url string")
        try:
            secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except ValueError:
            raise ConfigError(f"{prefix}keys.{key_id}: not valid base64url") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"{prefix}keys.{key_id}: secret shorter than {MIN_SECRET_BYTES} bytes")
        keys[KeyId(key_id)] = secret
    signing = mapping.get("signing")
    if not isinstance(signing, str) or signing not in keys:
        raise ConfigError(f"{prefix}signing: must name one of the keys ({', '.join(keys)})")
    return Keyring(keys=keys, signing_id=KeyId(signing))


def load_keyring(path: Path) -> Keyring:
    try:
        with open(path, "rb") as fh:
            mapping = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"key file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"key file {path}: not valid TOML: {exc}") from None
    return parse_keyring(mapping, where=str(path))


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
