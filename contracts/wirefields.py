"""Typed reading of one decoded wire map (a heartbeat's msgpack, a manifest's JSON): every error
names the dotted field and is raised as the caller's own error class, so each contract keeps its
error hierarchy (status hints, reason codes) while sharing the checks."""
from __future__ import annotations

import math
import re
from typing import Any

MISSING: Any = object()
IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # appliance, site and key ids on the wire


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class WireFields:
    error: type[Exception] = ValueError  # subclasses name their contract's error
    noun = "map"

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise self.error(f"{where or '(top level)'}: must be {'an' if self.noun[0] in 'aeiou' else 'a'} {self.noun}")
        self._data = data
        self._where = where

    def _name(self, name: str) -> str:
        return f"{self._where}.{name}" if self._where else name

    def _fail(self, name: str, what: str) -> Exception:
        return self.error(f"{self._name(name)}: {what}")

    def raw(self, name: str, default: Any = MISSING) -> Any:
        if name in self._data:
            return self._data[name]
        if default is MISSING:
            raise self._fail(name, "required")
        return default

    def bool(self, name: str, default: Any = MISSING) -> bool:
        value = self.raw(name, default)
        if not isinstance(value, bool):
            raise self._fail(name, "must be true or false")
        return value

    def str(self, name: str, default: Any = MISSING) -> str:
        value = self.raw(name, default)
        if not isinstance(value, str):
            raise self._fail(name, "must be a string")
        return value

    def opt_str(self, name: str) -> str | None:
        return None if self.raw(name, None) is None else self.str(name)

    def ident(self, name: str) -> str:
        value = self.str(name)
        if not IDENT.fullmatch(value):
            raise self._fail(name, "must be 1-64 of [A-Za-z0-9_.-]")
        return value

    def number(self, name: str) -> float:
        value = self.raw(name)
        if not is_number(value) or value < 0:
            raise self._fail(name, "must be a non-negative number")
        return float(value)

    def count(self, name: str) -> int:
        value = self.raw(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(name, "must be a non-negative integer")
        return value

    def opt_int(self, name: str) -> int | None:
        return None if self.raw(name, None) is None else self.count(name)

    def list(self, name: str) -> list[Any]:
        value = self.raw(name)
        if not isinstance(value, list):
            raise self._fail(name, "must be an array")
        return value
