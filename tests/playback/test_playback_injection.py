"""Nothing a client, steering or the catalog sends can change a player document's structure (issue 12,
item 5). Table cases — the two injections found (a `loc` whose `\\n` urlsplit ignored, a `"` breaking out
of `URI="…"`) among them, both failing on the code before this change —, the parts' grammar, a real
steering URL that must survive byte for byte (the appliance compares the token as sent), hypothesis
properties (arbitrary `loc`, steering URLs, pathway names and catalog strings: refused, or a document
with exactly the template's lines, tags and XML structure), and the HTTP shell."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import msgspec
import pytest
import requests
from hypothesis import HealthCheck, event, given, settings, strategies as st

from contracts.catalog import from_dict
from contracts.token import Keyring, client_prefix_for, parse_query, sign_path, verify_signature
from playback.core import manifests, parts
from playback.core.manifests import BadCatalog, BadLocation, PlaybackError
from playback.core.parts import Url

MPD_NS = "{urn:mpeg:dash:schema:mpd:2011}"
with_ = msgspec.structs.replace  # a Rendition is a msgspec Struct; the entry (dataclasses.replace) is not


def rendition(name, kind, key, bw):
    r = {"name": name, "type": kind, "key": key, "size": 1000, "xxh3": "0" * 32,
         "codec": "avc1.42c00c" if kind == "video" else "mp4a.40.2", "bandwidth": bw, "averageBandwidth": bw,
         "duration": 4.0, "init": {"offset": 0, "length": 10}, "index": {"offset": 10, "length": 5},
         "segments": [[15, 500, 2.0], [515, 485, 2.0]], "playlist": key.replace(".mp4", ".m3u8")}
    r.update({"width": 320, "height": 180, "frameRate": 24.0} if kind == "video" else
             {"language": "en", "channels": 2, "sampleRate": 48000})
    return r


ENTRY = from_dict({"schema": 1, "id": "t1", "title": "T One", "genres": [], "languages": ["en"], "releaseDate": None,
                   "duration": 4.0, "version": "v1", "master": "m", "dash": "d", "poster": None, "assets": [],
                   "source": {}, "ingestedAt": "", "renditions": [
                       rendition("lo", "video", "f/t1/lo.mp4", 100_000),
                       rendition("hi", "video", "f/t1/hi.mp4", 300_000),
                       rendition("aud", "audio", "f/t1/aud.mp4", 64_000)]})
LO = ENTRY.renditions[0]
TOKEN = "e=9&k=k1&c=127.0.0.0/24&s=abc"
BASE = f"http://a:1/{LO.key}"
GOOD = f"{BASE}?{TOKEN}"
NAMES = {"http://a:1": "oca-a", "http://b:1": "oca-b"}
KNOWN = list(NAMES)


def url_on(base: str, key: str) -> str:
    host, port = base.split("//")[1].split(":")
    return Url("http", host, int(port), True, tuple(key.split("/")), tuple(parse_qsl(TOKEN))).text


def locations(entry, bases=("http://a:1", "http://b:1")):
    return {r.key: [url_on(b, r.key) for b in bases] for r in entry.renditions}


def name_of(base: str) -> str:
    return NAMES.get(base, base)


# ---- what a document looks like ------------------------------------------------------------------

_ATTRS = re.compile(r'([A-Z0-9-]+)=("[^"\r\n]*"|[^",]*)(?:,|$)')
ATTRIBUTE_TAGS = ("#EXT-X-MAP", "#EXT-X-MEDIA", "#EXT-X-STREAM-INF", "#EXT-X-CONTENT-STEERING", "#EXT-X-KEY")


def attributes(text: str) -> list[tuple[str, str]]:
    """An RFC 8216 §4.2 attribute list, parsed strictly: every character must belong to a pair."""
    found, at = [], 0
    for m in _ATTRS.finditer(text):
        assert m.start() == at, f"stray characters in attribute list {text!r}"
        found.append((m[1], m[2]))
        at = m.end()
    assert at == len(text) and found, f"not an attribute list: {text!r}"
    return found


def hls_lines(text: str) -> list[str]:
    assert text.endswith("\n") and "\r" not in text
    lines = text[:-1].split("\n")
    assert all(" " <= ch < "\x7f" for line in lines for ch in line), "a control or non-ASCII character"
    return lines


def hls_shape(text: str) -> list[tuple]:
    """Per line: a URI line, or a tag with its attribute names (lists) or its whole value (others)."""
    out: list[tuple] = []
    for line in hls_lines(text):
        if not line.startswith("#"):
            out.append(("URI",))
            continue
        tag, _, value = line.partition(":")
        if tag in ATTRIBUTE_TAGS:
            out.append((tag, tuple(name for name, _ in attributes(value))))
        else:
            out.append((tag, value if tag in ("#EXTINF", "#EXT-X-BYTERANGE", "#EXT-X-VERSION") else ""))
    return out


def hls_uris(text: str) -> list[str]:
    """Every URI of a playlist: URI lines and the URI attributes, unquoted."""
    out = []
    for line in hls_lines(text):
        if not line.startswith("#"):
            out.append(line)
        elif line.split(":", 1)[0] in ATTRIBUTE_TAGS:
            out += [v[1:-1] for name, v in attributes(line.split(":", 1)[1]) if name in ("URI", "SERVER-URI")]
    return out


def assert_components(text: str, url: Url) -> None:
    """`text` is the serialisation of `url`, and the standard library reads the same components back."""
    assert parts.parse_url(text, "t", relative=True) == url
    split = urlsplit(text)
    assert (split.scheme or None, split.fragment) == (url.scheme, "")
    if url.scheme is not None:
        assert (split.hostname, split.port) == (url.host.strip("[]").lower(), url.port)
    assert [unquote(s) for s in split.path.split("/")] == ([""] if url.rooted else []) + list(url.segments)
    assert parse_qsl(split.query, keep_blank_values=True) == [(n, v or "") for n, v in url.query]


def mpd_shape(text: str) -> list[tuple]:
    root = ET.fromstring(text.encode())
    return [(el.tag, tuple(sorted(el.attrib)), bool((el.text or "").strip())) for el in root.iter()]


def render(entry, steering="/v1/playback/t1/steering.json?pathways=oca-a,oca-b", **kw):
    located = kw.pop("located", None) or locations(entry)
    paths = manifests.build_pathways(entry, located, kw.pop("name_of", name_of), **kw)
    return paths, manifests.hls_master(entry, paths, steering), manifests.dash_mpd(entry, paths, steering)


TEMPLATE_MEDIA = manifests.hls_media(LO, manifests.check_location(LO, GOOD, KNOWN))
_, TEMPLATE_MASTER, TEMPLATE_MPD = render(ENTRY)


# ---- table cases ------------------------------------------------------------------------------------

ENDLIST = f"{GOOD}\n#EXT-X-ENDLIST\nhttp://evil/x.mp4"
KEY = f'{GOOD}",BYTERANGE="1@0"\n#EXT-X-KEY:METHOD=AES-128,URI="http://evil/k'


@pytest.mark.parametrize("loc,detail", [
    (ENDLIST, "control character (U+000A)"),  # issue 12: urlsplit drops the \n, the playlist kept it
    (KEY, "control character (U+000A)"),  # issue 12: attribute break-out + a tag
    (f'{GOOD}",BYTERANGE="1@0"', "query has a character"),  # break-out without a line break
    (f'http://a:1/f/t1/lo.mp4"?{TOKEN}', "path has a character"),
    (f"{GOOD}\r", "(U+000D)"), (f"{GOOD}\t", "(U+0009)"), (f"{GOOD}\x00", "(U+0000)"), (f"{GOOD}\x7f", "(U+007F)"),
    (f"{GOOD}&x=\u00e9", "non-ASCII"), (f"{GOOD}&x=\u2028", "non-ASCII"), (f"{GOOD}&x=\x85", "non-ASCII"),
    (f"{GOOD}&x=a b", "a space"),
    (f"{GOOD}#EXT-X-ENDLIST", "fragment"),
    (f"{GOOD}&x=<MPD>", "query has a character"),
    (f"http://a:1@evil/f/t1/lo.mp4?{TOKEN}", "user info"),
    (f"http://a:0/f/t1/lo.mp4?{TOKEN}", "port"), (f"http://a:99999/f/t1/lo.mp4?{TOKEN}", "port"),
    (f"http://a:/f/t1/lo.mp4?{TOKEN}", "port"), (f"http://a:1x/f/t1/lo.mp4?{TOKEN}", "port"),
    (f"http://a_b:1/f/t1/lo.mp4?{TOKEN}", "hostname"), (f"http://1.2.3.999:1/f/t1/lo.mp4?{TOKEN}", "hostname"),
    (f"http://[fe80::1%25eth0]:1/f/t1/lo.mp4?{TOKEN}", "IPv6"), (f"http://-a:1/f/t1/lo.mp4?{TOKEN}", "hostname"),
    (f"ftp://a:1/f/t1/lo.mp4?{TOKEN}", "absolute http(s)"), ("/f/t1/lo.mp4?" + TOKEN, "absolute http(s)"),
    (f"http://a:1/f/t1/%6Co.mp4%2F?{TOKEN}", "not this rendition's file"),
    (f"http://a:1/f/t1/lo.mp4?{TOKEN}&s=x", "repeated"),
    ("http://a:1/f/t1/lo.mp4?e=9&k=k1&s=abc", "not a signed URL"),
    (f"http://a:1/f/t1/lo.mp4?{TOKEN}&x=%FF", "not UTF-8"),
    (f"http://evil:1/f/t1/lo.mp4?{TOKEN}", "not an appliance"),
    ("", "absolute http(s)"),
    ("x" * 5000, "longer than"),
], ids=["endlist-newline", "key-tag-breakout", "quote-breakout", "quote-in-path", "cr", "tab", "nul", "del",
        "latin1", "line-separator", "c1-nel", "space", "fragment", "angle", "userinfo", "port-0", "port-big",
        "port-empty", "port-junk", "underscore-host", "bad-ipv4", "ipv6-zone", "hyphen-host", "ftp", "relative",
        "other-spelling-of-another-file", "repeated-token", "unsigned", "bad-utf8", "foreign", "empty", "long"])
def test_a_bad_loc_is_refused_naming_the_parameter(loc, detail):
    with pytest.raises(BadLocation) as err:
        manifests.check_location(LO, loc, KNOWN)
    assert err.value.status_hint == 400 and err.value.reason == "bad-location"
    assert str(err.value).startswith("loc: ") and detail in str(err.value), str(err.value)


@pytest.mark.parametrize("loc,rendered", [
    (GOOD, GOOD),
    (f"HTTP://a:1/f/t1/lo.mp4?{TOKEN}", GOOD),
    (f"{GOOD}&", GOOD),
    (f"http://a:1/f/t1/%6C%6F.mp4?{TOKEN}", GOOD),  # one spelling: unreserved characters decoded
    (f"{GOOD}&x=%0A%23EXT-X-ENDLIST%0Ahttp://evil/x.mp4", f"{GOOD}&x=%0A%23EXT-X-ENDLIST%0Ahttp://evil/x.mp4"),
    (f'{GOOD}&x=%22,BYTERANGE=%221@0%22', f"{GOOD}&x=%22,BYTERANGE%3D%221@0%22"),
    (f"{GOOD}&x=a+b&y&z=%C3%A9%E2%80%A8", f"{GOOD}&x=a%20b&y&z=%C3%A9%E2%80%A8"),
    (f"{GOOD}&x=<", None),
], ids=["canonical", "scheme-case", "empty-item", "encoded-path", "encoded-newline", "encoded-quote",
        "plus-flag-utf8", "raw-angle-refused"])
def test_an_accepted_loc_is_rendered_from_its_components(loc, rendered):
    if rendered is None:
        with pytest.raises(BadLocation):
            manifests.check_location(LO, loc, KNOWN)
        return
    url = manifests.check_location(LO, loc, KNOWN)
    text = manifests.hls_media(LO, url)
    assert url.text == rendered and hls_shape(text) == hls_shape(TEMPLATE_MEDIA)
    assert all(u == rendered for u in hls_uris(text)) and len(hls_uris(text)) == 3


def test_the_two_found_injections_no_longer_reach_the_playlist():
    for loc in (ENDLIST, KEY):
        with pytest.raises(BadLocation):
            manifests.hls_media(LO, loc)  # a string given to the renderer is parsed too
    assert "#EXT-X-KEY" not in TEMPLATE_MEDIA and TEMPLATE_MEDIA.count("#EXT-X-ENDLIST") == 1


@pytest.mark.parametrize("prefix", ["127.0.0.1", "2001:db8::5"], ids=["v4", "v6"])
def test_a_steering_url_survives_byte_for_byte_and_still_verifies(prefix):
    """The appliance reads the token's fields as sent (no percent-decoding): re-serialising must keep
    steering's exact spelling, or every play would break with a malformed `c=`."""
    keys = Keyring({"k1": b"s" * 32}, "k1")
    signed = sign_path("/" + LO.key, keys, 2_000_000_000, client_prefix_for(prefix)) + "&rid=0123abcd.x-y_z"
    for base in ("http://a:1", "https://oca-1.isp.example:8443", "http://[2001:db8::1]:8101", "http://192.0.2.7"):
        url = manifests.check_location(LO, base + signed, [base])
        assert url.text == base + signed
        split = urlsplit(url.text)
        assert verify_signature(split.path, parse_query(split.query), keys).path == "/" + LO.key


@pytest.mark.parametrize("field,value,where", [
    ("codec", 'avc1.4d"><x', "renditions[0].codec"),
    ("codec", "avc1,mp4a.40.2", "renditions[0].codec"),
    ("name", 'lo",URI="http://evil/x', "renditions[0].name"),
    ("name", "lo\n#EXT-X-ENDLIST", "renditions[0].name"),
    ("name", "", "renditions[0].name"),
    ("key", "f/t1/lo.mp4\n#EXT-X-ENDLIST", "renditions[0].key"),
    ("key", "f/../lo.mp4", "renditions[0].key"),
], ids=["codec-breakout", "codec-list", "name-quote", "name-newline", "name-empty", "key-newline", "key-dots"])
def test_a_catalog_string_that_could_break_a_document_is_refused(field, value, where):
    entry = replace(ENTRY, renditions=(with_(LO, **{field: value}),) + ENTRY.renditions[1:])
    with pytest.raises(BadCatalog, match=re.escape(where)):
        render(entry)
    assert BadCatalog.status_hint == 502


@pytest.mark.parametrize("value", ['en"', "en\n", "e", "en-" + "x" * 9, "en US"], ids=repr)
def test_an_audio_language_must_be_a_bcp47_tag(value):
    aud = with_(ENTRY.renditions[2], language=value)
    with pytest.raises(BadCatalog, match=r"renditions\[2\]\.language"):
        render(replace(ENTRY, renditions=ENTRY.renditions[:2] + (aud,)))


def test_a_malformed_steering_url_is_left_out_and_reported():
    located = locations(ENTRY)
    located[LO.key][1] = f"http://b:1/{LO.key}?{TOKEN}\n#EXT-X-ENDLIST"
    refused: list[str] = []
    paths, master, mpd = render(ENTRY, located=located, on_refused=refused.append)
    assert len(refused) == 1 and refused[0].startswith(f"steering's URL for {LO.key}: a control character")
    assert "ENDLIST" not in master + mpd and "oca-b" in {p.id for p in paths}
    located[LO.key] = [located[LO.key][1]]
    with pytest.raises(manifests.NoLocations):
        render(ENTRY, located=located)


@pytest.mark.parametrize("raw,ok", [
    ("oca-a,oca-b", True), ("a", True), ("a,,b,", True), ("", False), ("a b", False), ('a"', False),
    ("a\n#EXT", False), ("a,b&x=1", False), (",".join("p%d" % i for i in range(40)), True),
], ids=["two", "one", "empties", "none", "space", "quote", "newline", "ampersand", "capped"])
def test_pathways_parameter(raw, ok):
    if not ok:
        with pytest.raises(PlaybackError, match="^pathways: "):
            manifests.parse_pathways(raw)
        return
    pathways = manifests.parse_pathways(raw)
    assert len(pathways) <= manifests.MAX_PATHWAYS_PARAM
    uri = manifests.steering_uri("t1", pathways, dash=True)
    assert uri.text == "/v1/playback/t1/steering.json?pathways=" + ",".join(pathways) + "&dash=1"


def test_steering_uri_is_built_from_parts():
    with pytest.raises(BadCatalog):
        manifests.steering_uri("t1/../x", ["a"], dash=False)
    with pytest.raises(PlaybackError):
        manifests.steering_uri("t1", ['a",X="1'], dash=False)
    with pytest.raises(PlaybackError):  # a steering URI given as a string is parsed like any URL
        manifests.hls_master(ENTRY, render(ENTRY)[0], '/s.json?p=a"\n#EXT-X-KEY')
    with pytest.raises(ValueError):
        Url.reference(("", "evil.example", "x"))  # "//evil.example/x" would name a host


@pytest.mark.parametrize("value,quoted,xml", [
    ("oca-1", '"oca-1"', "oca-1"),
    ("a&b<c>'d", "\"a&b<c>'d\"", "a&amp;b&lt;c&gt;&apos;d"),
    ('a"b', None, "a&quot;b"),
    ("a\nb", None, None), ("a\rb", None, None), ("a\x00b", None, None), ("a\u2028b", None, None),
    ("Espa\u00f1ol", '"Espa\u00f1ol"', "Espa\u00f1ol"),
], ids=["plain", "xml-specials", "quote", "lf", "cr", "nul", "line-separator", "utf8"])
def test_quoted_values(value, quoted, xml):
    for fn, want in ((parts.hls_quoted, quoted), (parts.xml_text, xml)):
        if want is None:
            with pytest.raises(BadCatalog, match="^v: "):
                fn(value, "v")
        else:
            assert fn(value, "v") == want


# ---- properties -------------------------------------------------------------------------------------

SPECIALS = ["\n", "\r", "\t", "\x00", "\x7f", '"', "'", "#EXT-X-ENDLIST", "#EXT-X-KEY:URI=", "%0A", "%0D", "%22",
            "%", "%2", "%zz", "%FF", "<", ">", "&", "&amp;", "=", "#", " ", "+", "?", "/", "//", "@", "[", "]", ":",
            ",", ";", "\\", "\u00e9", "\u2028", "\x85", "%E2%80%A8", "<BaseURL>", "</MPD>", "]]>", "\ufeff"]
BITS = st.lists(st.one_of(st.sampled_from(SPECIALS), st.text(max_size=6)), max_size=6).map("".join)
LOCS = st.one_of(
    st.text(max_size=60),
    BITS.map(lambda f: GOOD + f),
    BITS.map(lambda f: f"{GOOD}&x={f}"),
    st.tuples(BITS, BITS).map(lambda nv: f"{GOOD}&{nv[0]}={nv[1]}"),
    BITS.map(lambda f: f"{BASE}{f}?{TOKEN}"),
    BITS.map(lambda f: f"http://a:1{f}/{LO.key}?{TOKEN}"),
    BITS.map(lambda f: f"{f}{GOOD}"),
    BITS.map(lambda f: f"{GOOD}&x={quote(f, safe='')}"),  # percent-encoded: always accepted
)
PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(loc=LOCS)
def test_any_loc_is_refused_or_gives_exactly_the_template(loc):
    try:
        url = manifests.check_location(LO, loc, KNOWN)
    except BadLocation as exc:
        assert str(exc).startswith("loc: ")
        event("refused")
        return
    event("accepted")
    text = manifests.hls_media(LO, url)
    assert hls_shape(text) == hls_shape(TEMPLATE_MEDIA)
    assert len(hls_lines(text)) == len(hls_lines(TEMPLATE_MEDIA))
    uris = hls_uris(text)
    assert len(uris) == 3 and set(uris) == {url.text}
    assert_components(url.text, url)
    assert manifests.check_location(LO, url.text, KNOWN) == url  # the rendered spelling means the same


@PROPERTY
@given(f=BITS)
def test_a_percent_encoded_value_is_always_accepted_and_inert(f):
    url = manifests.check_location(LO, f"{GOOD}&x={quote(f, safe='')}", KNOWN)
    assert url.params("x") == [f]
    assert hls_shape(manifests.hls_media(LO, url)) == hls_shape(TEMPLATE_MEDIA)


def assert_same_documents(master: str, mpd: str, template_master: str = TEMPLATE_MASTER,
                          template_mpd: str = TEMPLATE_MPD) -> None:
    assert hls_shape(master) == hls_shape(template_master)
    assert mpd_shape(mpd) == mpd_shape(template_mpd)
    for uri in hls_uris(master):
        if uri.startswith("/"):  # SERVER-URI
            assert_components(uri, parts.parse_url(uri, "uri", relative=True))
            continue
        split = urlsplit(uri)  # a media playlist: "<rendition>.m3u8?loc=<signed URL>", nothing else
        assert (split.scheme, split.netloc, split.fragment) == ("", "", "")
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\.m3u8", split.path)
        (name, loc), = parse_qsl(split.query, keep_blank_values=True)
        assert name == "loc" and uri == Url.reference((split.path,), (("loc", loc),), rooted=False).text
        assert_components(loc, parts.parse_url(loc, "loc"))
    for base in ET.fromstring(mpd).iter(f"{MPD_NS}BaseURL"):
        assert_components(base.text, parts.parse_url(base.text, "base"))


CATALOG = st.one_of(st.text(max_size=12), BITS, st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,8}", fullmatch=True))


@PROPERTY
@given(index=st.sampled_from([0, 1, 2]), field=st.sampled_from(["name", "language", "codec", "key"]),
       value=CATALOG, codec_prefix=st.booleans())
def test_any_catalog_string_is_refused_or_gives_the_template_structure(index, field, value, codec_prefix):
    r = ENTRY.renditions[index]
    if field == "codec" and codec_prefix:
        value = r.codec.split(".")[0] + "." + value  # keep the family: the MPD groups by it
    changed = with_(r, **{field: value})
    entry = replace(ENTRY, renditions=ENTRY.renditions[:index] + (changed,) + ENTRY.renditions[index + 1:])
    try:
        _, master, mpd = render(entry)
        media = manifests.hls_media(changed, url_on("http://a:1", changed.key))
    except BadCatalog as exc:
        assert f"renditions[{index}].{field}" in str(exc) or str(exc).startswith(f"rendition.{field}")
        event(f"{field} refused")
        return
    event(f"{field} accepted")
    # the benign twin: the same structure is expected (a codec family of its own makes its own AdaptationSet)
    twin = with_(r, codec=value.split(".")[0]) if field == "codec" else r
    twin_entry = replace(ENTRY, renditions=ENTRY.renditions[:index] + (twin,) + ENTRY.renditions[index + 1:])
    _, twin_master, twin_mpd = render(twin_entry)
    assert_same_documents(master, mpd, twin_master, twin_mpd)
    assert hls_shape(media) == hls_shape(TEMPLATE_MEDIA)
    rep = {el.get("id"): el for el in ET.fromstring(mpd).iter(f"{MPD_NS}Representation")}[changed.name]
    assert rep.get("codecs") == changed.codec  # the value arrives as the catalog said, not re-read


@PROPERTY
@given(suffix=BITS, prefix=st.sampled_from(["", "oca-", "a", '"', "\n"]))
def test_any_steering_url_or_appliance_name_is_refused_or_gives_the_template(suffix, prefix):
    located = locations(ENTRY)
    located[LO.key][1] = url_on("http://b:1", LO.key) + suffix
    refused: list[str] = []
    names = lambda base: prefix + NAMES[base]  # noqa: E731 - a fleet may name an appliance anything
    paths, master, mpd = render(ENTRY, located=located, on_refused=refused.append, name_of=names)
    event("refused" if refused else "accepted")
    if refused:
        located[LO.key] = located[LO.key][:1]
    _, want_master, want_mpd = render(ENTRY, located=located, name_of=names)
    assert_same_documents(master, mpd, want_master, want_mpd)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,64}", p.id) for p in paths)


@PROPERTY
@given(raw=st.one_of(st.text(max_size=40), BITS), title_id=st.one_of(st.just("t1"), st.text(max_size=10)),
       dash=st.booleans())
def test_any_pathways_parameter_or_title_id_is_refused_or_composes_a_clean_uri(raw, title_id, dash):
    try:
        uri = manifests.steering_uri(title_id, manifests.parse_pathways(raw), dash)
    except PlaybackError as exc:
        assert str(exc).startswith(("pathways: ", "id: "))
        return
    assert_components(uri.text, uri)
    assert uri.text.startswith(f"/v1/playback/{title_id}/steering.json?pathways=")
    assert parts.hls_quoted(uri.text, "u") and json.loads(json.dumps(uri.text)) == uri.text


# ---- the HTTP shell (the real stack of test_playback_http) ----------------------------------------------

def _media_path(stack) -> tuple[str, str]:
    """A benign media playlist's path and its loc, from a real master playlist."""
    from playback_testkit import TITLE
    master = requests.get(f"{stack.playback.url}/v1/playback/{TITLE}/master.m3u8", timeout=10).text
    uri = next(line for line in master.splitlines() if line and not line.startswith("#"))
    return f"/v1/playback/{TITLE}/{uri.split('?', 1)[0]}", dict(parse_qsl(urlsplit(uri).query))["loc"]


def test_http_refuses_the_found_injections_with_a_json_400(stack):
    path, loc = _media_path(stack)
    benign = requests.get(stack.playback.url + path, params={"loc": loc}, timeout=10)
    assert benign.status_code == 200
    for bad in (f"{loc}\n#EXT-X-ENDLIST\nhttp://evil/x.mp4", f'{loc}",BYTERANGE="1@0"\n#EXT-X-KEY:URI="http://e/k'):
        r = requests.get(stack.playback.url + path, params={"loc": bad}, timeout=10)
        assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/json")
        assert r.json()["error"] == "bad-location" and r.json()["detail"].startswith("loc: ")
    twice = requests.get(stack.playback.url + path, params=[("loc", loc), ("loc", loc)], timeout=10)
    assert twice.status_code == 400 and "more than once" in twice.json()["detail"]
    # a double-encoded newline arrives as %0A: accepted, rendered re-encoded, the same lines
    inert = requests.get(stack.playback.url + path, params={"loc": loc + "&x=%0A%23EXT-X-ENDLIST"}, timeout=10)
    assert inert.status_code == 200 and hls_shape(inert.text) == hls_shape(benign.text)


def test_http_steering_manifest_rebuilds_its_reload_uri(stack):
    from playback_testkit import TITLE
    url = f"{stack.playback.url}/v1/playback/{TITLE}/steering.json"
    body = requests.get(url, params=[("pathways", "ams-1,fra-1"), ("x", '"\n'), ("_HLS_pathway", "ams-1")],
                        timeout=10).json()
    # rebuilt from the parsed session (an old-style session: one appliance per pathway), plus what it
    # put first: the next reload can tell whether the player left it (playback.core.steer)
    assert body["RELOAD-URI"] == (f"{stack.playback.url}/v1/playback/{TITLE}/steering.json"
                                  f"?pathways=ams-1,fra-1&last={body['PATHWAY-PRIORITY'][0]}")
    # a Host header that names no valid host: the URI falls back to a rooted reference, never echoes it
    hostile = requests.get(url, params={"pathways": "ams-1"}, headers={"Host": 'evil"\\x'}, timeout=10)
    assert hostile.status_code in (200, 400)
    if hostile.status_code == 200:
        assert hostile.json()["RELOAD-URI"] == f"/v1/playback/{TITLE}/steering.json?pathways=ams-1&last=ams-1"
    for bad in ("ams-1\n", 'ams-1"', "ams-1&x"):
        r = requests.get(url, params={"pathways": bad}, timeout=10)
        assert r.status_code == 400 and r.json()["detail"].startswith("pathways: ")
    master = requests.get(f"{stack.playback.url}/v1/playback/{TITLE}/master.m3u8", timeout=10).text
    assert f'SERVER-URI="{stack.playback.url}/v1/playback/{TITLE}/steering.json?pathways=' in master
