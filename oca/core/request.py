"""What the appliance answers to one parsed request, decided purely.

The shell hands over the method, the raw request-target, the few headers that matter, the client
address, the keyring, the clock and a lookup of held files; it gets back a verdict to carry out:
`Refuse` (an error status with a reason code for logs and metrics), `Health` or `Serve`.
Order matters and is deliberate: a bad target is 400 before anything else; the token is checked
before the inventory, so nobody without a valid URL learns what the appliance holds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from contracts.ids import FileKey, InvalidFileKey, validate_file_key
from contracts.token import Keyring, TokenError, parse_query, verify
from oca.core.ranges import RangeVerdict, decide

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Refuse:
    status: int
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Health:
    pass


@dataclass(frozen=True, slots=True)
class Serve(Generic[E]):
    key: FileKey
    entry: E
    verdict: RangeVerdict


Verdict = Refuse | Health | Serve

HEALTH_PATH = "/healthz"
ALLOWED_METHODS = ("GET", "HEAD")


@dataclass(frozen=True, slots=True)
class FileFacts:
    size: int
    etag: str
    last_modified: str  # IMF-fixdate, as sent in Last-Modified


def split_target(target: bytes) -> tuple[str, str] | Refuse:
    """Path and query of an origin-form target; anything else (absolute-form, percent-encoding,
    backslashes, non-ASCII, NUL) is refused: a key has exactly one spelling, so encoded dots or
    slashes can never reach the file system."""
    if not target.startswith(b"/"):
        return Refuse(400, "bad-target", "request-target must start with '/'")
    raw_path, _, raw_query = target.partition(b"?")
    if b"%" in raw_path or b"\\" in raw_path or b"\x00" in target:
        return Refuse(400, "bad-path", "encoded characters are not allowed in the path")
    try:
        return raw_path.decode("ascii"), raw_query.decode("ascii")
    except UnicodeDecodeError:
        return Refuse(400, "bad-path", "non-ASCII request-target")


def plan(
    method: str,
    target: bytes,
    range_header: str | None,
    if_range: str | None,
    client: str | None,
    keys: Keyring,
    now: float,
    lookup: Callable[[FileKey], E | None],
    facts: Callable[[E], FileFacts],
) -> Verdict:
    if method not in ALLOWED_METHODS:
        return Refuse(405, "method-not-allowed")
    split = split_target(target)
    if isinstance(split, Refuse):
        return split
    path, query = split
    if path == HEALTH_PATH:
        return Health()
    try:
        key = validate_file_key(path[1:])
    except InvalidFileKey as exc:
        return Refuse(400, "bad-path", str(exc))
    try:
        verify(path, parse_query(query), keys, now, client)
    except TokenError as exc:
        return Refuse(exc.status_hint, exc.reason, str(exc))
    entry = lookup(key)
    if entry is None:
        return Refuse(404, "not-held")
    f = facts(entry)
    return Serve(key, entry, decide(range_header, if_range, f.size, f.etag, f.last_modified))
