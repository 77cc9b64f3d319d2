"""The validated parts player documents are built from: URLs, HLS quoted-strings, XML values, and the
catalog strings that reach a playlist or an MPD.

Strategy. No string a client, steering or the catalog hands us is copied into an HLS playlist or an
MPD as it came. A URL is parsed into components and each one checked — scheme http/https, host a
hostname or an IP literal, port digits, path segments and query name/value pairs percent-decoded —
and a document only ever gets `Url.text`, re-serialised from those components with one encoding per
character class, so a `\\n`, `"` or `<` inside a value comes out as `%0A`, `%22`, `%3C` and can't end
a line, an attribute or an element. Raw control characters and raw non-ASCII anywhere in a URL are
refused, naming the parameter (`urllib.parse.urlsplit` silently drops `\\t\\r\\n`, which is how a
checked URL once differed from the rendered one). An HLS quoted-string has no escape (RFC 8216
§4.2: no `"`, CR or LF), so such a value is refused; XML values are escaped (& < > " ') and refuse
what XML 1.0 can't carry. Catalog strings (rendition names, languages, codecs, file keys, the title
id) must match their grammar: the catalog is input too. Pure: no I/O.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote, unquote, unquote_plus

from contracts.catalog import BadMetadata, Rendition, validate_title_id
from contracts.ids import InvalidFileKey, validate_file_key

MAX_URL_LEN = 4096
SCHEMES = ("http", "https")
# What may stay unencoded when a component is re-serialised (RFC 3986 unreserved plus the sub-delims
# that mean nothing in that component). `/` and `:` stay in query values: a token's `c=` (client
# prefix, "203.0.113.0/24") is compared as sent by the appliance, so it must keep steering's spelling.
PATH_SAFE = "-._~!$()*+,;=:@"
QUERY_SAFE = "-._~!$()*,;:@/?"
_RAW_PATH = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")
_RAW_QUERY = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
_ABSOLUTE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)"
                       r"(?:\?(?P<query>[^#]*))?(?P<fragment>#.*)?", re.S)
_ROOTED = re.compile(r"(?P<path>/(?!/)[^?#]*)(?:\?(?P<query>[^#]*))?(?P<fragment>#.*)?", re.S)
_AUTHORITY = re.compile(r"(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]]*))(?::(?P<port>.*))?", re.S)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
_V6 = re.compile(r"[0-9A-Fa-f:.]{2,45}")
# C0, DEL, C1, line/paragraph separators, lone surrogates, non-characters: nothing a document carries
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # a rendition name (origin's ladder is stricter)
LANGUAGE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8}){0,8}")  # BCP 47, as origin's ladder checks
CODEC = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_\-]{0,63}")  # one RFC 6381 codec id ("avc1.64001f")


class PlaybackError(ValueError):
    status_hint = 400
    reason = "bad-request"


class BadLocation(PlaybackError):
    """A URL a client (or steering) handed us is not one we would put in a document."""
    status_hint = 400
    reason = "bad-location"


class BadCatalog(PlaybackError):
    """A catalog string can't be placed in a document; the play is refused, naming the field."""
    status_hint = 502
    reason = "bad-catalog"


Query = tuple[tuple[str, Optional[str]], ...]  # decoded (name, value); None: the item had no "="


@dataclass(frozen=True)
class Url:
    """A URL as validated components: `scheme`/`host`/`port` (None for a reference on this server),
    decoded path `segments` (rooted: the path starts with "/") and decoded query pairs."""
    scheme: str | None
    host: str | None
    port: int | None
    rooted: bool
    segments: tuple[str, ...]
    query: Query = ()

    def __post_init__(self) -> None:
        if self.scheme is None and self.rooted and len(self.segments) > 1 and self.segments[0] == "":
            raise ValueError("a path reference starting with '//' would name a host")

    @classmethod
    def reference(cls, segments: tuple[str, ...], query: Query = (), rooted: bool = True) -> "Url":
        return cls(None, None, None, rooted, segments, query)

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}" + (f":{self.port}" if self.port is not None else "")

    @property
    def path(self) -> str:
        segments = [quote(s, safe=PATH_SAFE) for s in self.segments]
        if self.scheme is None and not self.rooted and segments:  # "a:b" first would read as a scheme
            segments[0] = segments[0].replace(":", "%3A")
        return ("/" if self.rooted else "") + "/".join(segments)

    @property
    def text(self) -> str:
        """The one spelling that goes into a document."""
        query = "&".join(quote(n, safe=QUERY_SAFE) + ("" if v is None else "=" + quote(v, safe=QUERY_SAFE))
                         for n, v in self.query)
        head = self.origin if self.scheme is not None else ""
        return head + self.path + (f"?{query}" if query else "")

    def params(self, name: str) -> list[str]:
        return [v if v is not None else "" for n, v in self.query if n == name]

    def __str__(self) -> str:
        return self.text


def parse_url(text: str, where: str, *, relative: bool = False,
              error: type[PlaybackError] = BadLocation) -> Url:
    """An absolute http(s) URL (or, with `relative`, a path on this server: "/a/b?q") as components;
    anything else raises `error`, its message starting with `where`."""
    _check_raw(text, where, error)
    m = _ABSOLUTE.fullmatch(text)
    if m is None:
        r = _ROOTED.fullmatch(text) if relative else None
        if r is None:
            raise error(f"{where}: must be an absolute http(s) URL" + (" or a path" if relative else ""))
        if r["fragment"] is not None:
            raise error(f"{where}: must not have a fragment")
        return Url.reference(_segments(r["path"], where, error), _query(r["query"], where, error))
    if m["fragment"] is not None:
        raise error(f"{where}: must not have a fragment")
    scheme = m["scheme"].lower()
    if scheme not in SCHEMES:
        raise error(f"{where}: must be an absolute http(s) URL")
    host, port = _authority(m["authority"], where, error)
    path = m["path"]
    if path and not path.startswith("/"):
        raise error(f"{where}: path must start with '/'")
    segments = _segments(path, where, error) if path else ()
    return Url(scheme, host, port, bool(path), segments, _query(m["query"], where, error))


def _check_raw(text: str, where: str, error: type[PlaybackError]) -> None:
    if len(text) > MAX_URL_LEN:
        raise error(f"{where}: longer than {MAX_URL_LEN} characters")
    for i, ch in enumerate(text):
        if not " " < ch < "\x7f":
            kind = "non-ASCII" if ch > "\x7f" else "a space" if ch == " " else "a control"
            raise error(f"{where}: {kind} character (U+{ord(ch):04X}) at {i}; percent-encode it or leave it out")


def _authority(authority: str, where: str, error: type[PlaybackError]) -> tuple[str, int | None]:
    if "@" in authority:
        raise error(f"{where}: must not carry user info")
    m = _AUTHORITY.fullmatch(authority)
    if m is None or not (m["v6"] or m["host"]):
        raise error(f"{where}: no host")
    if m["v6"] is not None:
        try:
            if not _V6.fullmatch(m["v6"]):  # IPv6Address takes a zone id ("%eth0"); a URL host may not
                raise ValueError(m["v6"])
            ipaddress.IPv6Address(m["v6"])
        except ValueError:
            raise error(f"{where}: not an IPv6 literal in [...]") from None
        host = f"[{m['v6']}]"
    else:
        host = m["host"]
        if not is_hostname(host):
            raise error(f"{where}: host is not a hostname or an IPv4 address")
    port = m["port"]
    if port is None:
        return host, None
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise error(f"{where}: port must be 1-65535")
    return host, int(port)


def is_hostname(host: str) -> bool:
    """RFC 1123 letters-digits-hyphen labels; a name whose last label is numeric must be an IPv4 address."""
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return False
    if labels[-1].isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
    return True


def _segments(path: str, where: str, error: type[PlaybackError]) -> tuple[str, ...]:
    if not _RAW_PATH.fullmatch(path):
        raise error(f"{where}: the path has a character URLs don't allow unencoded")
    try:
        return tuple(unquote(s, errors="strict") for s in path[1:].split("/"))
    except UnicodeDecodeError:
        raise error(f"{where}: the path's percent-encoding is not UTF-8") from None


def _query(query: str | None, where: str, error: type[PlaybackError]) -> Query:
    if not query:
        return ()
    if not _RAW_QUERY.fullmatch(query):
        raise error(f"{where}: the query has a character URLs don't allow unencoded")
    pairs = []
    try:
        for item in query.split("&"):
            if item:
                name, sep, value = item.partition("=")
                decoded = unquote_plus(value, errors="strict") if sep else None
                pairs.append((unquote_plus(name, errors="strict"), decoded))
    except UnicodeDecodeError:
        raise error(f"{where}: the query's percent-encoding is not UTF-8") from None
    return tuple(pairs)


# ---- values inside HLS attribute lists and XML ------------------------------------------------------

def check_text(value: str, where: str, error: type[PlaybackError] = BadCatalog) -> str:
    """Text a document may carry: no control characters (no line break, nothing XML 1.0 refuses)."""
    m = _CONTROL.search(value)
    if m is not None:
        raise error(f"{where}: control character U+{ord(m.group()):04X} not allowed")
    return value


def hls_quoted(value: str, where: str, error: type[PlaybackError] = BadCatalog) -> str:
    """`"value"` for an HLS attribute list; RFC 8216 §4.2 quoted-strings can't escape, so refuse."""
    if '"' in check_text(value, where, error):
        raise error(f'{where}: a \'"\' can\'t be inside an HLS quoted-string')
    return f'"{value}"'


def xml_text(value: str, where: str, error: type[PlaybackError] = BadCatalog) -> str:
    return (check_text(value, where, error).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&apos;"))


def xml_attr(value: str, where: str, error: type[PlaybackError] = BadCatalog) -> str:
    return f'"{xml_text(value, where, error)}"'


# ---- catalog strings that reach a document ----------------------------------------------------------

def check_title_id(title_id: str) -> str:
    try:
        return validate_title_id(title_id)
    except BadMetadata as exc:
        raise BadCatalog(f"id: {exc}") from None


def check_rendition(r: Rendition, where: str) -> Rendition:
    """Every string of `r` the HLS and DASH renderers place, against its grammar (BadCatalog names it)."""
    if not NAME.fullmatch(r.name):
        raise BadCatalog(f"{where}.name: 1-64 of [A-Za-z0-9_.-], starting with a letter or digit")
    try:
        validate_file_key(r.key)
    except InvalidFileKey as exc:
        raise BadCatalog(f"{where}.key: {exc}") from None
    if not CODEC.fullmatch(r.codec):
        raise BadCatalog(f"{where}.codec: not an RFC 6381 codec id")
    if r.language and not LANGUAGE.fullmatch(r.language):
        raise BadCatalog(f"{where}.language: not a BCP 47 tag")
    return r
