"""Typed config and wire messages as msgspec Structs: one class per table, each default written once,
on the field. `convert(Cls, mapping)` checks and builds; every error names the dotted key, the way an
operator reads it ("tiers.ssd[1].path: must be an absolute path"), and is raised as the caller's own
error class (ConfigError for TOML, a contract's error for a wire message).

Keys are checked before types, so a typo is named as what it is, before anything it causes: a required
key missing while the table holds an unknown key spelt like it ("origin.locaton" for
"origin.location") is reported as that unknown key; any other unknown key is refused, with the
setting it resembles suggested. msgspec itself then checks types and bounds (`Annotated[int,
Meta(ge=1)]`) and runs each Struct's `__post_init__`, which raises `invalid("field", "what")` for a
rule types cannot say. msgspec names a dict entry "[...]"; `explain` finds which key it was.

Paths: a `Path` field takes an absolute path, or a relative one against `base` (the config file's
folder) when the caller gives one."""
from __future__ import annotations

import difflib
import functools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping, TypeVar

import tomllib
import typing

import msgspec
from msgspec import inspect as mi

__all__ = ["Conf", "ConfigError", "HttpUrl", "convert", "explain", "invalid", "load_toml", "read_toml", "without_slash"]

T = TypeVar("T")
_type_info = functools.lru_cache(maxsize=None)(mi.type_info)  # ~0.5 ms to build; a CZF converts 10^4 zones
# difflib ratios: from TYPO an unknown key is taken for a misspelt required one ("locaton": 0.93, while
# "fleet_url" beside a missing "fleet_file" is 0.74: both real settings); from HINT it is suggested.
_TYPO = 0.8
_HINT = 0.75
_AT = re.compile(r"^(.*) - at `\$(.*)`$", re.S)
_KEY_AT = re.compile(r"^(.*) - at `key` in `\$(.*)`$", re.S)
_MISSING_FIELD = re.compile(r"^Object missing required field `([^`]+)`$")
_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+|\.\.\.)\]")
_FIELD_FIRST = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?(?:\.[A-Za-z_][A-Za-z0-9_]*)*): (.*)$", re.S)


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


class Conf(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config table: immutable, keyword-built, unknown keys refused."""


# an http(s) URL with a host and no whitespace; a table keeps it without_slash
HttpUrl = Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+[^\s]*\Z", extra={"says": "must be an http(s) URL"})]


def without_slash(table: Conf, *names: str) -> None:
    """In a `__post_init__`: URL settings (one, a tuple of them, or None) kept without a trailing slash,
    so `url + "/path"` is right however the operator wrote it."""
    for name in names:
        value = getattr(table, name)
        if isinstance(value, str):
            msgspec.structs.force_setattr(table, name, value.rstrip("/"))
        elif isinstance(value, tuple):
            msgspec.structs.force_setattr(table, name, tuple(v.rstrip("/") for v in value))


def invalid(field: str, what: str) -> ValueError:
    """The error a `__post_init__` raises for one of its fields: `raise invalid("port", "must be ...")`."""
    return ValueError(f"{field}: {what}")


def load_toml(cls: type[T], path: Path, **kw: Any) -> T:
    """Read a TOML file and convert it; relative paths in it are taken against its folder."""
    path = Path(path).resolve()
    return convert(cls, read_toml(path), base=path.parent, **kw)


def convert(cls: type[T], data: Any, *, where: str = "", base: Path | None = None,
            error: type[Exception] = ConfigError, strict: bool = True, noun: str = "table") -> T:
    """`data` (a decoded TOML/JSON/msgpack map) as a `cls`, or `error` naming the dotted key."""
    info = _type_info(cls)
    problem = _unknown_keys(info, data, where)
    if problem:
        raise error(problem)
    hook = _dec_hook(base)
    try:
        return msgspec.convert(data, cls, strict=strict, dec_hook=hook)
    except msgspec.ValidationError as exc:
        raise error(explain(exc, cls, data, where=where, base=base, strict=strict, noun=noun)) from None


def explain(exc: msgspec.ValidationError, cls: Any, data: Any, *, where: str = "",
            base: Path | None = None, strict: bool = True, noun: str = "table") -> str:
    """msgspec's error as "dotted.key: what is wrong", with "[...]" resolved to the dict key at fault.
    `noun` is what a map is called where the data came from ("table" in TOML, "map" on the wire)."""
    text = str(exc)
    key_error = _KEY_AT.match(text)
    m = key_error or _AT.match(text)
    message, path = (m.group(1), m.group(2)) if m else (text, "")
    dotted, leaf, value = _resolve(_type_info(cls), data, path, where, base, strict)
    if key_error:
        key_type = getattr(leaf, "key_type", None)
        bad = _failing(key_type, list(value) if isinstance(value, Mapping) else [], base, strict)
        what = _plain(message, *_strip(key_type)[::-1], bad, noun) if key_type is not None else message
        return f"{dotted}[{bad!r:.80}]: not a valid key ({what})"
    if missing := _MISSING_FIELD.match(message):
        return f"{_join(dotted, missing.group(1))}: required"
    inner = _FIELD_FIRST.match(message)
    if inner and not message.startswith(("Expected", "Object", "Invalid")):
        dotted, message = _join(dotted, inner.group(1)), inner.group(2)
    leaf, says = _strip(leaf)
    words = _plain(message, says, leaf, value, noun)
    if "| null`, got" in message and noun != "table":  # TOML has no null: an Optional is just left out
        words += " or nil"
    return f"{dotted or '(top level)'}: {words}"


# ---- unknown and misspelt keys ------------------------------------------------------------------

def _unknown_keys(info: Any, data: Any, where: str) -> str | None:
    info, _ = _strip(_unwrap(info, data))
    if isinstance(info, mi.StructType) and not info.array_like and isinstance(data, Mapping):
        fields = {f.encode_name: f for f in info.fields}
        unknown = [k for k in data if k not in fields and k != info.tag_field]  # the tag: msgspec checks it
        missing = [name for name, f in fields.items() if f.required and name not in data]
        for name in missing:
            for typo in difflib.get_close_matches(name, [str(k) for k in unknown], n=1, cutoff=_TYPO):
                return (f"{_join(where, typo)}: unknown setting (did you mean {name!r}? "
                        f"{_join(where, name)} is required)")
        if unknown and info.forbid_unknown_fields:
            absent = [name for name in fields if name not in data]
            hint = difflib.get_close_matches(str(unknown[0]), absent, n=1, cutoff=_HINT)
            return f"{_join(where, str(unknown[0]))}: unknown setting" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        if missing:
            return f"{_join(where, missing[0])}: required"
        for name, f in fields.items():
            if name in data:
                problem = _unknown_keys(f.type, data[name], _join(where, name))
                if problem:
                    return problem
    elif isinstance(info, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)) and isinstance(data, list):
        for i, item in enumerate(data):
            problem = _unknown_keys(info.item_type, item, f"{where}[{i}]")
            if problem:
                return problem
    elif isinstance(info, mi.DictType) and isinstance(data, Mapping):
        for key, item in data.items():
            problem = _unknown_keys(info.value_type, item, _join(where, str(key)))
            if problem:
                return problem
    return None


def _strip(info: Any) -> tuple[Any, str | None]:
    """A type without its Metadata wrapper, and the wording its `Meta(extra={"says": ...})` gives."""
    if isinstance(info, mi.Metadata):
        return info.type, (info.extra or {}).get("says")
    return info, None


def _unwrap(info: Any, data: Any) -> Any:
    """The member of an Optional/Union that `data`'s shape would take (a table → its Struct), keeping
    its Metadata; the one member besides None of an Optional."""
    bare, _ = _strip(info)
    if not isinstance(bare, mi.UnionType):
        return info
    members = [t for t in bare.types if not isinstance(_strip(t)[0], mi.NoneType)]
    for member in members:
        kind = _strip(member)[0]
        if isinstance(kind, (mi.StructType, mi.DictType)) and isinstance(data, Mapping) and not getattr(kind, "array_like", False):
            return member
        if isinstance(kind, (mi.ListType, mi.VarTupleType, mi.TupleType)) and isinstance(data, list):
            return member
        if isinstance(kind, mi.StructType) and kind.array_like and isinstance(data, list):
            return member
    return members[0] if len(members) == 1 else info


def _join(where: str, name: str) -> str:
    if not name:
        return where
    if name.startswith("["):
        return where + name
    return f"{where}.{name}" if where else name


# ---- locating and wording a type error ----------------------------------------------------------

def _resolve(info: Any, data: Any, path: str, where: str, base: Path | None, strict: bool) -> tuple[str, Any, Any]:
    """Walk msgspec's path ("$.tiers[...][1].path") through the types and the data: the dotted key,
    the leaf's type info (Metadata kept) and the value found there (None when absent)."""
    dotted = where
    for attr, index in _SEGMENT.findall(path):
        info, _ = _strip(_unwrap(info, data))
        if attr:
            if isinstance(info, mi.StructType):
                f = next((f for f in info.fields if f.encode_name == attr), None)
                info = _in_declared_order(f.type, info.cls, f.name) if f else None
            dotted = _join(dotted, attr)
            data = data.get(attr) if isinstance(data, Mapping) else None
        elif index == "...":
            value_type = info.value_type if isinstance(info, mi.DictType) else None
            key = _failing(value_type, data, base, strict, values=True) if isinstance(data, Mapping) else None
            dotted = _join(dotted, str(key)) if key is not None else dotted + "[...]"
            info, data = value_type, (data.get(key) if key is not None else None)
        else:
            i = int(index)
            if isinstance(info, mi.StructType) and info.array_like:
                item = info.fields[i].type if i < len(info.fields) else None
            elif isinstance(info, mi.TupleType):
                item = info.item_types[i] if i < len(info.item_types) else None
            else:
                item = getattr(info, "item_type", None)
            dotted = f"{dotted}[{i}]"
            info = item
            data = data[i] if isinstance(data, list) and i < len(data) else None
    return dotted, _unwrap(info, data), data


def _in_declared_order(info: Any, cls: type, name: str) -> Any:
    """A Literal field's choices as its annotation lists them (msgspec's type info sorts them), so an
    error says "one of ssd, hdd" as the code declares it."""
    bare = _strip(_unwrap(info, None))[0]
    if not isinstance(bare, mi.LiteralType):
        return info
    stack = [typing.get_type_hints(cls, include_extras=True).get(name)]
    while stack:
        hint = stack.pop()
        if typing.get_origin(hint) is Literal:
            return mi.LiteralType(values=tuple(typing.get_args(hint)))
        stack.extend(typing.get_args(hint))
    return info


def _failing(kind: Any, data: Any, base: Path | None, strict: bool, values: bool = False) -> Any:
    """The first key of a dict (or item of a list) that does not convert to `kind` (msgspec names a
    dict entry only "[...]"); with `values`, the key whose value does not."""
    if kind is None:
        return None
    target = _python_type(kind)
    items = data.items() if values else ((item, item) for item in data)
    for key, value in items:
        try:
            msgspec.convert(value, target, strict=strict, dec_hook=_dec_hook(base))
        except (msgspec.ValidationError, TypeError, ValueError):
            return key
    return None


def _python_type(info: Any) -> Any:
    """The annotation a type info was made from, bounds and patterns included."""
    info, says = _strip(info)
    if isinstance(info, mi.StructType):
        return info.cls
    if isinstance(info, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
        container = {mi.ListType: list, mi.VarTupleType: tuple, mi.SetType: set, mi.FrozenSetType: frozenset}[type(info)]
        item = _python_type(info.item_type)
        kind = container[item, ...] if container is tuple else container[item]
        return _annotated(kind, min_length=info.min_length, max_length=info.max_length)
    if isinstance(info, mi.TupleType):
        return tuple[tuple(_python_type(t) for t in info.item_types)]
    if isinstance(info, mi.DictType):
        kind = dict[_python_type(info.key_type), _python_type(info.value_type)]
        return _annotated(kind, min_length=info.min_length, max_length=info.max_length)
    if isinstance(info, mi.UnionType):
        out = None
        for member in info.types:
            t = _python_type(member)
            out = t if out is None else out | t
        return out
    if isinstance(info, mi.LiteralType):
        return Literal[tuple(info.values)]
    if isinstance(info, (mi.IntType, mi.FloatType)):
        return _annotated(int if isinstance(info, mi.IntType) else float, gt=info.gt, ge=info.ge, lt=info.lt,
                          le=info.le, multiple_of=info.multiple_of)
    if isinstance(info, mi.StrType):
        return _annotated(str, min_length=info.min_length, max_length=info.max_length, pattern=info.pattern)
    if isinstance(info, (mi.EnumType, mi.CustomType)):
        return info.cls
    simple = {mi.BoolType: bool, mi.NoneType: type(None), mi.BytesType: bytes}
    return simple.get(type(info), Any)


def _annotated(kind: Any, **bounds: Any) -> Any:
    bounds = {k: v for k, v in bounds.items() if v is not None}
    return Annotated[kind, msgspec.Meta(**bounds)] if bounds else kind


def _plain(message: str, says: str | None, leaf: Any, value: Any, noun: str = "table") -> str:
    """msgspec's wording ("Expected `int` >= 1") in the house's ("must be at least 1"); a type's own
    words (`Meta(extra={"says": ...})`) when it has them."""
    if not message.startswith(("Expected", "Invalid enum value")):
        return message
    if says:
        return says
    if isinstance(leaf, mi.LiteralType):
        return "must be one of " + ", ".join(str(v) for v in leaf.values)
    if isinstance(leaf, mi.EnumType):
        return "must be one of " + ", ".join(str(getattr(m, "value", m)) for m in leaf.cls)
    if isinstance(leaf, (mi.IntType, mi.FloatType)):
        what = "an integer" if isinstance(leaf, mi.IntType) else "a number"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (isinstance(leaf, mi.IntType) and not isinstance(value, int)):
            return f"must be {what}"
        if not math.isfinite(value):
            return "must be finite"
        for bound, word in ((leaf.ge, "at least"), (leaf.gt, "above"), (leaf.le, "at most"), (leaf.lt, "below")):
            if bound is not None and not _holds(value, bound, word):
                return f"must be {word} {_number(bound)}"
        return f"must be {what}"
    if isinstance(leaf, mi.BoolType):
        return "must be true or false"
    if isinstance(leaf, mi.StrType):
        if not isinstance(value, str):
            return "must be a string"
        if leaf.min_length and len(value) < leaf.min_length:
            return "must not be empty" if leaf.min_length == 1 else f"must be at least {leaf.min_length} characters"
        if leaf.max_length is not None and len(value) > leaf.max_length:
            return f"must be at most {leaf.max_length} characters"
        if leaf.pattern:
            return f"must match {leaf.pattern}"
        return "must be a string"
    if isinstance(leaf, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
        if isinstance(value, list):
            if leaf.min_length and len(value) < leaf.min_length:
                return "must not be empty" if leaf.min_length == 1 else f"must have at least {leaf.min_length} items"
            if leaf.max_length is not None and len(value) > leaf.max_length:
                return f"must have at most {leaf.max_length} items"
        if isinstance(leaf.item_type, mi.StrType):
            return "must be a list of strings"
        if isinstance(_strip(leaf.item_type)[0], mi.StructType) and not _strip(leaf.item_type)[0].array_like:
            return f"must be an array of {noun}s"
        return "must be an array"
    if isinstance(leaf, mi.StructType) and leaf.array_like:
        return f"must be an array of {len(leaf.fields)}: [{', '.join(f.encode_name for f in leaf.fields)}]"
    if isinstance(leaf, (mi.StructType, mi.DictType, mi.TypedDictType)):
        return f"must be {_a(noun)}"
    if isinstance(leaf, mi.CustomType) and leaf.cls is Path:
        return "must be a path string"
    return message.replace("`", "")


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _number(bound: float) -> str:
    """A bound as people write it: 4294967296 as 2^32, 1.0 as 1."""
    if bound in (1 << 32, 1 << 64, 1 << 63):
        return f"2^{int(bound).bit_length() - 1}"
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _holds(value: float, bound: float, word: str) -> bool:
    return {"at least": value >= bound, "above": value > bound,
            "at most": value <= bound, "below": value < bound}[word]


def _dec_hook(base: Path | None) -> Callable[[type, Any], Any]:
    def hook(kind: type, value: Any) -> Any:
        if kind is Path:
            if not isinstance(value, str) or not value:
                raise TypeError("must be a path string")
            path = Path(value)
            if not path.is_absolute():
                if base is None:
                    raise ValueError("must be an absolute path")
                path = base / path
            return path
        raise NotImplementedError
    return hook
