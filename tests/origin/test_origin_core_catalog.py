"""Catalog entries (the contract in contracts/catalog.py: schema, round trip, named errors, search
ranking, catalog keys), and origin's side: manifests rendered from an entry, object keys and
garbage-collection plans."""
from __future__ import annotations

import copy
import json
from xml.etree import ElementTree

import msgspec
import pytest

from contracts import catalog as cat
from contracts.catalog import Asset, BadMetadata, CatalogError, Metadata, Rendition, Segment, Span, TitleEntry
from origin.core import layout, playlists
from origin.core.errors import UsageError

V = "v0123456789abcdef"


def rendition(name="720p", kind="video", codec="avc1.64001f", bandwidth=3_000_000, index=True, **kw) -> Rendition:
    segs = (Segment(900, 1000, 4.0), Segment(1900, 1200, 4.0), Segment(3100, 500, 1.5))
    video = kind == "video"
    return Rendition(
        name=name, kind=kind, key=f"files/t1/{V}/{name}.mp4", size=3600, xxh3="ab" * 16, codec=codec,
        bandwidth=bandwidth, average_bandwidth=bandwidth - 1000, init=Span(0, 800),
        index=Span(800, 100) if index else None, segments=segs, playlist=f"files/t1/{V}/{name}.m3u8",
        width=1280 if video else None, height=720 if video else None, frame_rate=29.97 if video else None,
        language=None if video else "en", channels=None if video else 2, sample_rate=None if video else 48000, **kw)


def entry(**kw) -> TitleEntry:
    renditions = kw.pop("renditions", (rendition("240p", bandwidth=400_000), rendition(),
                                        rendition("720p-hevc", codec="hvc1.1.6.L93.B0", bandwidth=1_800_000),
                                        rendition("audio-0-en", "audio", "mp4a.40.2", 130_000)))
    meta = kw.pop("meta", Metadata("t1", "A Title", ("drama",), ("en",), "2020-02-29"))
    fields = dict(version=V, duration_s=9.5, master=f"files/t1/{V}/master.m3u8", dash=f"files/t1/{V}/manifest.mpd",
                  assets=(Asset(f"files/t1/{V}/master.m3u8", 10, "cd" * 16, "application/vnd.apple.mpegurl"),),
                  poster=f"files/t1/{V}/poster.jpg", source={"kind": "encode", "xxh3": "ef" * 16},
                  ingested_at="2024-01-01T00:00:00Z")
    return TitleEntry(meta=meta, renditions=renditions, **{**fields, **kw})


def test_round_trip():
    e = entry()
    d = cat.to_dict(e)
    assert cat.from_dict(d) == e
    assert d["bitrates"] == [400_000, 1_800_000, 3_000_000] and d["releaseDate"] == "2020-02-29"
    assert d["renditions"][1]["segments"][0] == [900, 1000, 4.0]
    assert d["renditions"][1]["init"] == {"offset": 0, "length": 800}
    assert "width" not in d["renditions"][3] and d["renditions"][3]["language"] == "en"


# written by the dict-walking codec this contract had before its msgspec Structs: stored objects keep
# these bytes, and decode to what they always did
PINNED = (
    '{"schema":1,"id":"t1","title":"Amélie","genres":["drama"],"languages":["en"],"releaseDate":"2020-02-29",'
    '"duration":4.333333,"bitrates":[3000000],"version":"v0123456789abcdef",'
    '"master":"files/t1/v0123456789abcdef/master.m3u8","dash":"files/t1/v0123456789abcdef/manifest.mpd",'
    '"poster":null,"renditions":[{"name":"720p","type":"video","key":"files/t1/v0123456789abcdef/720p.mp4",'
    '"size":3600,"xxh3":"abababababababababababababababab","codec":"avc1.64001f","bandwidth":3000000,'
    '"averageBandwidth":2999000,"duration":4.333333,"width":1280,"height":720,"frameRate":29.97002997002997,'
    '"init":{"offset":0,"length":800},"index":{"offset":800,"length":100},"segments":[[900,1000,4.0],'
    '[1900,1200,0.333333]],"playlist":"files/t1/v0123456789abcdef/720p.m3u8"},{"name":"audio-0-en",'
    '"type":"audio","key":"files/t1/v0123456789abcdef/a.mp4","size":100,"xxh3":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",'
    '"codec":"mp4a.40.2","bandwidth":130000,"averageBandwidth":129000,"duration":4.0,"language":"en","channels":2,'
    '"sampleRate":48000,"init":{"offset":0,"length":10},"index":null,"segments":[[10,90,4.0]],'
    '"playlist":"files/t1/v0123456789abcdef/a.m3u8"}],"assets":[{"key":"files/t1/v0123456789abcdef/master.m3u8",'
    '"size":10,"xxh3":"efefefefefefefefefefefefefefefef","contentType":"application/vnd.apple.mpegurl"}],'
    '"source":{"kind":"encode","crf":23.5},"ingestedAt":"2024-01-01T00:00:00Z"}\n').encode()


def test_stored_bytes_are_pinned():
    video = msgspec.structs.replace(rendition(), segments=(Segment(900, 1000, 4.0), Segment(1900, 1200, 1 / 3)),
                                    frame_rate=30000 / 1001)
    audio = Rendition(name="audio-0-en", kind="audio", key=f"files/t1/{V}/a.mp4", size=100, xxh3="cd" * 16,
                      codec="mp4a.40.2", bandwidth=130_000, average_bandwidth=129_000, init=Span(0, 10),
                      segments=(Segment(10, 90, 4.0),), playlist=f"files/t1/{V}/a.m3u8", language="en", channels=2,
                      sample_rate=48000)
    e = entry(meta=Metadata("t1", "Amélie", ("drama",), ("en",), "2020-02-29"), renditions=(video, audio),
              duration_s=4 + 1 / 3, poster=None, source={"kind": "encode", "crf": 23.5},
              assets=(Asset(f"files/t1/{V}/master.m3u8", 10, "ef" * 16, "application/vnd.apple.mpegurl"),))
    assert cat.encode(e) == PINNED
    stored = cat.decode(PINNED, "catalog/t1.json")
    assert stored.renditions[0].segments[1] == Segment(1900, 1200, 0.333333) and cat.encode(stored) == PINNED


def _broken(path: list, value) -> dict | list:
    d = cat.to_dict(entry())
    if not path:
        return []
    target = d
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


BROKEN = [
    ("schema", ["schema"], 2, "schema"),
    ("no-title", ["title"], KeyError, "^title: required$"),
    ("title-type", ["title"], 5, "^title: must be a string$"),
    ("bad-date", ["releaseDate"], "2020-13-01", "release date"),
    ("bad-id", ["id"], "../x", "title id"),
    ("genres-type", ["genres"], "drama", "genres"),
    ("rendition-type", ["renditions", 0, "type"], "subtitles", r"renditions\[0\].type"),
    ("negative-size", ["renditions", 1, "size"], -1, r"^renditions\[1\]\.size: must be at least 0$"),
    ("segment-shape", ["renditions", 1, "segments", 0], [1, 2],
     r"^renditions\[1\]\.segments\[0\]: must be an array of 3: \[offset, length, duration\]$"),
    ("segment-length", ["renditions", 1, "segments", 0, 1], -2,
     r"^renditions\[1\]\.segments\[0\]\[1\]: must be at least 0$"),
    ("index-type", ["renditions", 0, "index"], "x", r"^renditions\[0\]\.index: must be a map or nil$"),
    ("init-missing", ["renditions", 0, "init"], KeyError, r"^renditions\[0\]\.init: required$"),
    ("index-offset", ["renditions", 0, "index", "offset"], "0", r"^renditions\[0\]\.index\.offset: must be an int"),
    ("bool-size", ["renditions", 0, "size"], True, r"^renditions\[0\]\.size: must be an integer$"),
    ("video-width", ["renditions", 0, "width"], KeyError, r"^renditions\[0\]\.width: required for video$"),
    ("audio-language", ["renditions", 3, "language"], None, r"^renditions\[3\]\.language: required for audio$"),
    ("asset-type", ["assets", 0, "contentType"], 1, r"^assets\[0\]\.contentType: must be a string$"),
    ("not-object", [], KeyError, "^entry: must be an object$"),
]


@pytest.mark.parametrize("path,value,message", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_from_dict_names_the_field(path, value, message):
    with pytest.raises(CatalogError, match=message):
        cat.from_dict(_broken(path, value))
    raw = json.dumps(_broken(path, value)).encode()
    with pytest.raises(CatalogError, match=message.replace("^", "^catalog/t1.json: ")):  # the stored bytes
        cat.decode(raw, "catalog/t1.json")


def test_no_video_is_refused():
    d = cat.to_dict(entry())
    d["renditions"] = [r for r in d["renditions"] if r["type"] == "audio"]
    with pytest.raises(CatalogError, match="no video"):
        cat.from_dict(d)


METADATA = [
    (Metadata("ok-1", "T"), None),
    (Metadata("", "T"), "title id"),
    (Metadata("a/b", "T"), "title id"),
    (Metadata("x.json", "T"), "title id"),
    (Metadata("ok", "  "), "title"),
    (Metadata("ok", "T", languages=("english!",)), "language"),
    (Metadata("ok", "T", release_date="yesterday"), "release date"),
    (Metadata("ok", "T", genres=("",)), "genres"),
]


@pytest.mark.parametrize("meta,error", METADATA, ids=[str(i) for i in range(len(METADATA))])
def test_validate_metadata(meta, error):
    if error is None:
        assert cat.validate_metadata(meta) == meta
    else:
        with pytest.raises(BadMetadata, match=error):
            cat.validate_metadata(meta)


def titled(tid: str, title: str, genres=()) -> TitleEntry:
    return entry(meta=Metadata(tid, title, tuple(genres)))


LIBRARY = [titled("ocean", "Ocean"), titled("oceans-eleven", "Ocean's Eleven", ["crime"]),
           titled("blue", "The Blue Ocean", ["documentary"]), titled("amelie", "Amélie", ["comedy", "Romance"]),
           titled("big-buck", "Big Buck Bunny", ["animation"])]
SEARCHES = [
    ("ocean", None, ["ocean", "oceans-eleven", "blue"]),  # exact, prefix, word
    ("OCEAN'S", None, ["oceans-eleven"]),
    ("blue oc", None, ["blue"]),  # every word a prefix of a title word
    ("amelie", None, ["amelie"]),  # accents folded
    ("uck", None, ["big-buck"]),  # substring
    ("big-buck", None, ["big-buck"]),  # by id
    (None, "romance", ["amelie"]),
    ("ocean", "crime", ["oceans-eleven"]),
    ("zzz", None, []),
    (None, None, ["amelie", "big-buck", "ocean", "oceans-eleven", "blue"]),  # all, by title
]


@pytest.mark.parametrize("query,genre,ids", SEARCHES, ids=[f"{s[0]}|{s[1]}" for s in SEARCHES])
def test_search(query, genre, ids):
    assert [e.title_id for e in cat.search(LIBRARY, query, genre)] == ids


def test_media_playlist():
    r = rendition()
    text = playlists.media_playlist(r)
    lines = text.splitlines()
    assert lines[:7] == ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:4", "#EXT-X-PLAYLIST-TYPE:VOD",
                         "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-INDEPENDENT-SEGMENTS",
                         '#EXT-X-MAP:URI="720p.mp4",BYTERANGE="800@0"']
    assert lines[7:10] == ["#EXTINF:4,", "#EXT-X-BYTERANGE:1000@900", "720p.mp4"]
    assert lines[-1] == "#EXT-X-ENDLIST" and text.count("#EXTINF") == 3
    absolute = playlists.media_playlist(r, "https://oca1.example/files/t1/x/720p.mp4?e=1&s=2")
    assert 'URI="https://oca1.example/files/t1/x/720p.mp4?e=1&s=2"' in absolute


@pytest.mark.parametrize("durations,target", [((4.0, 4.0), 4), ((4.49,), 4), ((4.5,), 5), ((0.2,), 1)])
def test_target_duration(durations, target):
    r = msgspec.structs.replace(rendition(), segments=tuple(Segment(0, 1, d) for d in durations))
    assert playlists.target_duration(r) == target


def test_master_playlist_puts_h264_first_and_groups_audio():
    text = playlists.master_playlist(entry(), lambda r: f"https://p/{r.name}.m3u8")
    lines = text.splitlines()
    media = [line for line in lines if line.startswith("#EXT-X-MEDIA:")]
    assert len(media) == 1 and 'GROUP-ID="audio"' in media[0] and 'URI="https://p/audio-0-en.m3u8"' in media[0]
    variants = [lines[i + 1] for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF")]
    assert variants == ["https://p/240p.m3u8", "https://p/720p.m3u8", "https://p/720p-hevc.m3u8"]
    first = next(line for line in lines if line.startswith("#EXT-X-STREAM-INF"))
    assert "BANDWIDTH=530000," in first and 'CODECS="avc1.64001f,mp4a.40.2"' in first
    assert "RESOLUTION=1280x720" in first and "FRAME-RATE=29.970" in first and 'AUDIO="audio"' in first


def test_mpd_segment_base_and_fallback():
    text = playlists.mpd(entry())
    assert text.count("<AdaptationSet") == 3  # avc1, hvc1, audio
    assert '<SegmentBase indexRange="800-899" indexRangeExact="true"><Initialization range="0-799"/>' in text
    assert 'frameRate="30000/1001"' in text and 'lang="en"' in text and "<BaseURL>720p.mp4</BaseURL>" in text
    no_sidx = entry(renditions=(rendition(index=False),))
    fallback = playlists.mpd(no_sidx, lambda r: "https://x/a.mp4?e=1&s=2")
    assert '<S d="4000" r="1"/>' in fallback and '<S d="1500"/>' in fallback
    assert '<SegmentURL mediaRange="900-1899"/>' in fallback
    assert "<BaseURL>https://x/a.mp4?e=1&amp;s=2</BaseURL>" in fallback
    ElementTree.fromstring(fallback)  # both are well-formed XML
    ElementTree.fromstring(text)


def test_keys_and_versions():
    assert cat.catalog_key("t1") == "catalog/t1.json"
    assert cat.title_of_catalog_key("catalog/t1.json") == "t1"
    assert cat.title_of_catalog_key("catalog/x/y.json") is None
    assert layout.file_key("t1", V, "720p.mp4") == f"files/t1/{V}/720p.mp4"
    with pytest.raises(UsageError):
        layout.file_key("t1", V, "../x")
    a = layout.version_of([("a.mp4", "1"), ("b.mp4", "2")])
    assert a == layout.version_of([("b.mp4", "2"), ("a.mp4", "1")]) and a.startswith("v") and len(a) == 17
    assert a != layout.version_of([("a.mp4", "1"), ("b.mp4", "3")])


def test_gc_plan():
    old, new, older = "files/t/v1111111111111111", "files/t/v2222222222222222", "files/t/v3333333333333333"
    objects = [f"{v}/{n}" for v in (old, new, older) for n in ("a.mp4", "master.m3u8")] + ["catalog/t.json"]
    current = [f"{new}/a.mp4", f"{new}/master.m3u8"]
    plan = layout.plan_gc(objects, current, referenced=[f"{older}/a.mp4"])
    assert plan.delete == (f"{old}/a.mp4", f"{old}/master.m3u8")  # whole version dirs, never catalog/
    assert plan.kept_referenced == (f"{older}/a.mp4", f"{older}/master.m3u8")
    assert copy.deepcopy(plan) == plan


PEAKS = [
    # (segments as (bytes, seconds), target 4 s unless the longest says otherwise) -> peak bits/s
    ([(400_000, 4.0), (600_000, 4.0)], 1_200_000),
    ([(400_000, 4.0), (50_000, 0.04)], 891_090),  # the tail alone (10 Mbit/s) is no run; with its neighbour it is
    ([(100_000, 2.0), (300_000, 2.0), (100_000, 2.0)], 1_200_000),  # 2 s target: one segment is a run
    ([(10_000, 0.1)], 0),  # nothing lasts half a target: no run (the caller falls back to the average)
]


@pytest.mark.parametrize("segments,peak", PEAKS, ids=[str(i) for i in range(len(PEAKS))])
def test_peak_bit_rate(segments, peak):
    from origin.core.assemble import peak_bit_rate
    segs = tuple(Segment(0, size, seconds) for size, seconds in segments)
    assert peak_bit_rate(segs) == pytest.approx(peak, rel=0.002)
