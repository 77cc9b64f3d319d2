"""JSON wire messages as msgspec Structs, decoded in two passes only when one fails. The fast path: a
cached `msgspec.json.Decoder` takes the bytes straight to the Struct, checking types, bounds and
patterns in C. Only when it refuses them is the document read again as plain JSON, handed to the
contract's own first check (the schema version, with its own error class), and explained by
`contracts.structconf`, so every error names the dotted key and is raised as the contract's error.

Bounds and patterns (the types below) are checked when decoding, never when a program builds a value:
a planner's odd value is refused by the reader it reaches, not by the planner mid-plan.

A versioned message is a Struct tagged `"v": <version>`: msgspec writes the tag first, and `decoder`
puts a never-sent version 0 beside it in a union, because msgspec requires a tag only where it must
tell union members apart — so a document without "v" is refused, like one with another version."""
from __future__ import annotations

import functools
import json
import re
import sys
from typing import Annotated, Any, Callable, Iterable, TypeVar

import msgspec
from msgspec import Meta

from contracts.ids import FILE_KEY_PATTERN, IDENT, MAX_FILE_KEY_LEN, InvalidFileKey, validate_file_key
from contracts.structconf import convert, explain

T = TypeVar("T")


def matching(pattern: str | re.Pattern[str], says: str, **meta: Any) -> Any:
    """A str that must match all of `pattern` (msgspec searches: both ends anchored here), refused in
    the words `says`."""
    text = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    return Annotated[str, Meta(pattern=rf"^(?:{text})\Z", extra={"says": says}, **meta)]


Count = Annotated[int, Meta(ge=0)]  # sizes, offsets, priorities
Amount = Annotated[float, Meta(ge=0, le=sys.float_info.max)]  # finite, not negative: seconds, rates, counts
Ident = matching(IDENT, "must be 1-64 of [A-Za-z0-9_.-]")  # appliance, site and source ids
Hex128 = matching("[0-9a-f]{32}", "must be 32 lowercase hex digits")  # xxh3-128, content versions
Pair = Annotated[tuple[Amount, Amount], Meta(extra={"says": "must be [requests, bytes], two non-negative numbers"})]


class _Unversioned(msgspec.Struct, tag_field="v", tag=0):
    """Never sent: see the module's note."""


def decoder(cls: type[T]) -> msgspec.json.Decoder[T]:
    """The cached fast decoder of `cls`; a tagged (versioned) Struct must carry its tag."""
    return msgspec.json.Decoder(_versioned(cls))


@functools.cache
def _versioned(cls: Any) -> Any:
    tagged = msgspec.inspect.type_info(cls).tag_field is not None  # type: ignore[attr-defined]
    return cls | _Unversioned if tagged else cls


def decode(dec: msgspec.json.Decoder[T], raw: bytes | str, error: type[Exception], *, label: str = "",
           where: str = "", first: Callable[[Any], None] | None = None) -> T:
    """`raw` as `dec`'s Struct, or `error` naming the dotted key (prefixed by `where`). `first` sees
    the plain JSON of a refused document before anything else is said about it."""
    try:
        value = dec.decode(raw)
    except msgspec.ValidationError as exc:
        problem: msgspec.ValidationError | None = exc
    except msgspec.DecodeError as exc:
        raise error(f"{label + ': ' if label else ''}not valid JSON: {exc}") from None
    else:
        if not isinstance(value, _Unversioned):
            return value
        problem = None
    return from_builtins(_struct_of(dec), loads(raw, error, label), error, where=where, first=first,
                         problem=problem)


def from_builtins(cls: type[T], data: Any, error: type[Exception], *, where: str = "",
                  first: Callable[[Any], None] | None = None, problem: msgspec.ValidationError | None = None) -> T:
    """`data` (plain JSON values) as a `cls`, checked by msgspec in one pass; if refused (or given the
    `problem` a decoder had with it), `first`, then structconf's checks, which name the key."""
    if problem is None:
        try:
            value = msgspec.convert(data, _versioned(cls))
        except msgspec.ValidationError as exc:
            problem = exc
        else:
            if not isinstance(value, _Unversioned):
                return value
    if first is not None:
        first(data)
    tag = msgspec.inspect.type_info(cls).tag_field  # type: ignore[attr-defined]
    if tag is not None and isinstance(data, dict):  # checked by `first`; structconf knows no tags
        data = {k: v for k, v in data.items() if k != tag}
    convert(cls, data, where=where, error=error, noun="map")  # raises, naming the key, for all but what
    if problem is not None:  # only msgspec's decoding refuses (a number out of range)
        raise error(explain(problem, cls, data, where=where, noun="map"))
    raise error(f"{tag}: version 0 not supported")


def loads(raw: bytes | str, error: type[Exception], label: str = "") -> Any:
    """`raw` as plain JSON values; `error("<label>: not valid JSON: ...")` if it is not JSON."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.ValidationError:  # a number out of range: valid JSON, for the Struct's checks to name
        return json.loads(raw)
    except msgspec.DecodeError as exc:
        raise error(f"{label + ': ' if label else ''}not valid JSON: {exc}") from None


def bad_key(keys: Iterable[str]) -> tuple[int, str] | None:
    """The position of the first of `keys` that is not a file key, and why (None: all are). One regex
    pass in C over a whole inventory (twice as fast as a pattern in the type); validate_file_key only
    to word the refusal."""
    keys = keys if isinstance(keys, (list, tuple, dict)) else list(keys)
    if all(map(FILE_KEY_PATTERN.fullmatch, keys)) and max(map(len, keys), default=0) <= MAX_FILE_KEY_LEN:
        return None
    for i, key in enumerate(keys):
        try:
            validate_file_key(key)
        except InvalidFileKey as exc:
            return i, f"{key[:80]!r}: {exc}"
    return None


def _struct_of(dec: msgspec.json.Decoder[Any]) -> Any:
    kind = dec.type
    return next(t for t in getattr(kind, "__args__", (kind,)) if t is not _Unversioned)


__all__ = ["Amount", "Count", "Hex128", "Ident", "Pair", "bad_key", "decode", "decoder", "from_builtins", "loads",
           "matching"]
