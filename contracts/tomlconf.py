"""Typed reading of TOML config: every service's `parse(mapping)` walks its tables with `Section`,
which names the dotted key in each error ("tiers.ssd[1].path: must be an absolute path") and refuses
keys it was never asked for, so a typo is an error and not a silently ignored setting.

A typo is named as what it is, before anything it causes: a required key found missing while the table
holds a key nobody has asked for that is spelt like it ("origin.locaton" for "origin.location") is
reported as that unknown key, not as the required one; `done()` suggests the setting an unknown key
resembles."""
from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Mapping

_MISSING: Any = object()
# difflib ratios: from TYPO an unknown key is taken for a misspelt required one ("locaton": 0.93, while
# "fleet_url" beside a missing "fleet_file" is 0.74: both real settings); from HINT it is suggested.
_TYPO = 0.8
_HINT = 0.75


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range; the message names the key."""


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


class Section:
    def __init__(self, mapping: Mapping[str, Any], where: str = "") -> None:
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{where or '(top level)'}: must be a table")
        self._mapping = mapping
        self._where = where
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self._where}.{name}" if self._where else name

    def has(self, name: str) -> bool:
        return name in self._mapping

    def _get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        if name in self._mapping:
            return self._mapping[name]
        if default is _MISSING:
            unasked = [k for k in self._mapping if k not in self._seen]
            for typo in difflib.get_close_matches(name, unasked, n=1, cutoff=_TYPO):
                raise ConfigError(f"{self.key(typo)}: unknown setting (did you mean {name!r}? "
                                  f"{self.key(name)} is required)")
            raise ConfigError(f"{self.key(name)}: required")
        return default

    def http_url(self, name: str) -> str | None:
        """An optional http(s) URL, without its trailing slash."""
        value = self.str(name, None)
        if value is not None and not value.startswith(("http://", "https://")):
            raise ConfigError(f"{self.key(name)}: must be an http(s) URL")
        return value.rstrip("/") if value else None

    def str(self, name: str, default: Any = _MISSING, choices: tuple[str, ...] | None = None) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{self.key(name)}: must be a string")
        if choices is not None and value not in choices:
            raise ConfigError(f"{self.key(name)}: must be one of {', '.join(choices)}")
        return value

    def bool(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{self.key(name)}: must be true or false")
        return value

    def int(self, name: str, default: Any = _MISSING, min: int | None = None, max: int | None = None) -> Any:
        value = self._get(name, default)
        if value is default and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.key(name)}: must be an integer")
        return self._in_range(name, value, min, max)

    def float(self, name: str, default: Any = _MISSING, min: float | None = None, max: float | None = None) -> Any:
        value = self._get(name, default)
        if value is default and default is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{self.key(name)}: must be a number")
        return self._in_range(name, float(value), min, max)

    def _in_range(self, name: str, value: Any, lo: Any, hi: Any) -> Any:
        if lo is not None and value < lo:
            raise ConfigError(f"{self.key(name)}: must be at least {lo}")
        if hi is not None and value > hi:
            raise ConfigError(f"{self.key(name)}: must be at most {hi}")
        return value

    def path(self, name: str, default: Any = _MISSING, base: Path | None = None) -> Any:
        """An absolute path; a relative one is taken against `base` when given, else refused."""
        value = self._get(name, default)
        if value is default and default is None:
            return None
        if not isinstance(value, (str, Path)) or not str(value):
            raise ConfigError(f"{self.key(name)}: must be a path string")
        path = Path(value)
        if not path.is_absolute():
            if base is None:
                raise ConfigError(f"{self.key(name)}: must be an absolute path")
            path = base / path
        return path

    def str_list(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.key(name)}: must be a list of strings")
        return value

    def section(self, name: str, default: Any = _MISSING) -> "Section":
        value = self._get(name, {} if default is not _MISSING else _MISSING)
        return Section(value, self.key(name))

    def sections(self, name: str, default: Any = _MISSING) -> list["Section"]:
        value = self._get(name, default)
        if not isinstance(value, list):
            raise ConfigError(f"{self.key(name)}: must be an array of tables")
        return [Section(item, f"{self.key(name)}[{i}]") for i, item in enumerate(value)]

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        return self._get(name, default)

    def done(self) -> None:
        """Refuse keys nobody asked for (typos)."""
        unknown = sorted(set(self._mapping) - self._seen)
        if unknown:
            known = sorted(self._seen - set(self._mapping))  # settings asked for and left out
            hint = difflib.get_close_matches(unknown[0], known, n=1, cutoff=_HINT)
            raise ConfigError(f"{self.key(unknown[0])}: unknown setting"
                              + (f" (did you mean {hint[0]!r}?)" if hint else ""))
