"""What the appliance answers to one parsed request, decided purely.

The shell hands over the method, the raw request-target, the few headers that matter, the client
address, the keyring, the clock and a lookup of held files; it gets back a verdict to carry out:
`Refuse` (an error status with a reason code for logs and metrics), `Health` or `Serve`.
Order matters and is deliberate: a bad target is 400 before anything else; the token is checked
before the inventory, so nobody without a valid URL learns what the appliance holds.

A player fetches every segment of a rendition through the same signed URL, so the verdict "this
target is a well-formed key with a good signature" is memoised in a `TargetMemo` (bounded, emptied
when the keys change); expiry and client prefix are still checked on every request.
"""
from __future__ import annotations

from typing import Callable, Generic, NamedTuple, TypeVar

from contracts.ids import FileKey, InvalidFileKey, validate_file_key
from contracts.ranges import RangeVerdict, decide
from contracts.token import (Grant, Keyring, Scope, TokenError, authorization_params, check_grant, parse_query,
                             verify_signature)

E = TypeVar("E")
MEMO_SIZE = 8192


# NamedTuples rather than frozen dataclasses: as immutable, cheaper to build per request.
class Refuse(NamedTuple):
    status: int
    reason: str
    detail: str = ""


class Health(NamedTuple):
    pass


class Serve(NamedTuple, Generic[E]):
    key: FileKey
    entry: E
    verdict: RangeVerdict


Verdict = Refuse | Health | Serve

HEALTH_PATH = "/healthz"
ALLOWED_METHODS = ("GET", "HEAD")
METHOD_NOT_ALLOWED = Refuse(405, "method-not-allowed")
HEALTH = Health()


class Authorized(NamedTuple):
    key: FileKey
    grant: Grant


class FileFacts(NamedTuple):
    size: int
    etag: str
    last_modified: int  # seconds since the epoch, as sent (to the second) in Last-Modified


class TargetMemo:
    """request-target -> (key, grant) for targets whose key and signature were already checked."""

    def __init__(self, size: int = MEMO_SIZE) -> None:
        self._size = size
        self._seen: dict[bytes, Authorized] = {}  # one dict for good: cleared in place, never replaced
        # `get(target) -> Authorized | None` is the dict's own lookup: it runs per request on the
        # appliance's hot path, which a Python method around it would cost a frame.
        self.get: Callable[[bytes], Authorized | None] = self._seen.get

    def put(self, target: bytes, authorized: Authorized) -> None:
        if len(self._seen) >= self._size:
            self._seen.clear()  # cheap and bounded; hot URLs come back on their next request
        self._seen[target] = authorized

    def clear(self) -> None:
        self._seen.clear()


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


def authorize(target: bytes, keys: Keyring, authorization: str | None = None) -> Authorized | Refuse | Health:
    """Key and signature of a target, independent of time and client (hence memoisable). A URL
    token (play scope) comes in the query; a peer or pull-through fetch without one may present a
    fill token in `Authorization: CDN-Token …` instead."""
    split = split_target(target)
    if isinstance(split, Refuse):
        return split
    path, query = split
    if path == HEALTH_PATH:
        return HEALTH
    try:
        key = validate_file_key(path[1:])
    except InvalidFileKey as exc:
        return Refuse(400, "bad-path", str(exc))
    try:
        params, scope = parse_query(query), Scope.PLAY
        if "s" not in params and authorization is not None:
            fill_params = authorization_params(authorization)
            if fill_params is not None:
                params, scope = fill_params, Scope.FILL
        return Authorized(key, verify_signature(path, params, keys, scope))
    except TokenError as exc:
        return Refuse(exc.status_hint, exc.reason, str(exc))


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
    memo: TargetMemo | None = None,
    authorization: str | None = None,
) -> Verdict:
    if method not in ALLOWED_METHODS:
        return METHOD_NOT_ALLOWED
    if authorization is not None:
        memo = None  # fill fetches are rare; only URL tokens are memoised
    known = memo.get(target) if memo is not None else None
    if known is None:
        checked = authorize(target, keys, authorization)
        if type(checked) is not Authorized:
            return checked  # type: ignore[return-value]
        known = checked
        if memo is not None:
            memo.put(target, known)
    key, grant = known
    try:
        check_grant(grant, now, client)
    except TokenError as exc:
        return Refuse(exc.status_hint, exc.reason, str(exc))
    entry = lookup(key)
    if entry is None:
        return Refuse(404, "not-held", key)
    f = facts(entry)
    return Serve(key, entry, decide(range_header, if_range, f.size, f.etag, f.last_modified))
