"""Ingest end to end, against the local directory and a real S3 API server: the renditions ffprobe
reads, the catalog entry, idempotence, versioning, bad sources and interrupted runs."""
from __future__ import annotations

import subprocess
import sys

import pytest
from origin_testkit import BUCKET, SAMPLE_FRAMES, SAMPLE_SECONDS
from origin_testkit import CrashingBackend, PowerCut, ffprobe_streams, tree

from contracts.catalog import Metadata, catalog_key, to_dict
from origin.catalog import Catalog
from origin.core.errors import SourceError
from origin.core.layout import title_prefix
from origin.encode import sample
from origin.hashing import hash_bytes
from origin.ingest import IngestRequest, ingest

CODEC_NAMES = {"avc1": "h264", "hvc1": "hevc", "av01": "av1", "mp4a": "aac"}


def keys_under(backend, prefix: str) -> dict[str, str]:
    return {info.key: info.etag for info in backend.list(prefix)}


def test_entry_describes_the_ladder(world, kind):
    entry = world.ingested(kind).entry
    assert entry.title_id == "sample" and entry.meta.title == "Sample Title"
    assert entry.meta.genres == ("test", "animation") and entry.meta.languages == ("en",)
    assert entry.meta.release_date == "2024-05-01"
    assert entry.duration_s == pytest.approx(SAMPLE_SECONDS, abs=0.05)
    video = {r.name: r for r in entry.video}
    assert set(video) == {"72p", "108p", "144p", "180p", "144p-hevc", "144p-av1"}
    assert sum(r.codec.startswith("avc1.") for r in entry.video) >= 4
    assert video["180p"].width == 320 and video["180p"].height == 180 and video["72p"].width == 128
    assert video["144p-hevc"].codec.startswith("hvc1.") and video["144p-av1"].codec.startswith("av01.0.")
    for r in entry.video:
        assert r.frame_rate == 30.0
        assert r.bandwidth >= r.average_bandwidth > 0
        assert [round(s.duration_s, 3) for s in r.segments] == [2.0, 2.0, 1.0]  # keyframes every segment_s
    (audio,) = entry.audio
    assert audio.codec == "mp4a.40.2" and audio.language == "en" and audio.sample_rate == 48000
    assert to_dict(entry)["bitrates"] == sorted(r.bandwidth for r in entry.video)


def test_files_match_entry_and_ffprobe_reads_every_rendition(world, kind, tmp_path):
    entry = world.ingested(kind).entry
    backend = world.backend(kind)
    for r in entry.renditions:
        assert r.key.startswith(f"files/sample/{entry.version}/") and r.key.endswith(f"/{r.name}.mp4")
        data = backend.get_bytes(r.key)
        assert len(data) == r.size and hash_bytes(data) == r.xxh3
        # the ranges the entry records are where the boxes are
        assert data[4:8] == b"ftyp" and data[r.init.length + 4:r.init.length + 8] in (b"sidx", b"moof")
        if r.index:
            assert data[r.index.offset + 4:r.index.offset + 8] == b"sidx"
        for seg in r.segments:
            assert data[seg.offset + 4:seg.offset + 8] == b"moof"
        local = tmp_path / f"{r.name}.mp4"
        local.write_bytes(data)
        (stream,) = ffprobe_streams(str(local))
        assert stream["codec_name"] == CODEC_NAMES[r.codec.split(".")[0]]
        if r.kind == "video":
            assert (stream["width"], stream["height"]) == (r.width, r.height)
    one = next(r for r in entry.video if r.name == "144p")
    (counted,) = ffprobe_streams(str(tmp_path / "144p.mp4"), "-count_frames")
    assert int(counted["nb_read_frames"]) == SAMPLE_FRAMES
    for key in (entry.master, entry.dash, entry.poster, one.playlist):
        assert backend.head(key) is not None
    assert {a.key for a in entry.assets} >= {entry.master, entry.dash, entry.poster}


def test_playlists_are_relative_and_byte_ranged(world, kind):
    entry = world.ingested(kind).entry
    backend = world.backend(kind)
    master = backend.get_bytes(entry.master).decode()
    assert "#EXT-X-STREAM-INF" in master and "://" not in master and 'TYPE=AUDIO' in master
    media = backend.get_bytes(entry.video[0].playlist).decode()
    assert "#EXT-X-BYTERANGE:" in media and '#EXT-X-MAP:URI="' in media and media.rstrip().endswith("#EXT-X-ENDLIST")
    mpd = backend.get_bytes(entry.dash).decode()
    assert "<SegmentBase indexRange=" in mpd and "<BaseURL>144p.mp4</BaseURL>" in mpd


def test_declared_audio_channels_are_what_ffprobe_decodes(world, kind, tmp_path):
    """The sample's tone is mono: the catalog, the HLS master (CHANNELS) and the MPD
    (AudioChannelConfiguration) must say 1, as ffprobe does — not the MP4 sample entry's template 2."""
    entry = world.ingested(kind).entry
    backend = world.backend(kind)
    (audio,) = entry.audio
    local = tmp_path / "audio.mp4"
    local.write_bytes(backend.get_bytes(audio.key))
    (stream,) = ffprobe_streams(str(local))
    decoded = int(stream["channels"])
    assert decoded == 1 and audio.channels == decoded
    master = backend.get_bytes(entry.master).decode()
    assert f'CHANNELS="{decoded}"' in master and 'CHANNELS="2"' not in master
    mpd = backend.get_bytes(entry.dash).decode()
    assert f'audio_channel_configuration:2011" value="{decoded}"' in mpd


def test_reingest_same_content_uploads_nothing(world, kind):
    world.ingested(kind)
    backend = world.backend(kind)
    before = keys_under(backend, "")
    result = world.ingest(kind, backend=backend)
    assert result.up_to_date and result.uploaded == 0 and backend.stats.puts == 0
    assert keys_under(backend, "") == before
    if kind == "local":
        root = world.location("local").path
        snapshot = tree(root)
        world.ingest(kind)
        assert tree(root) == snapshot  # not even rewritten: same sizes and mtimes


def test_reingest_of_encoded_dir_checks_each_file(world, kind):
    """--encoded DIR with the same files: every object is found in place by size and xxh3."""
    entry = world.ingested(kind).entry
    backend = world.backend(kind)
    meta = Metadata("sample", "Sample Title", ("test", "animation"), ("en",), "2024-05-01")
    result = ingest(IngestRequest(meta, encoded_dir=world.work_dir()), backend, world.encode)
    assert result.entry.version == entry.version
    assert backend.stats.puts == 0 and result.uploaded == 0  # not even the entry is rewritten
    assert result.skipped == len(entry.objects())


def test_metadata_change_rewrites_only_the_entry(world, kind):
    world.ingest(kind, "renamed")
    backend = world.backend(kind)
    result = world.ingest(kind, "renamed", backend=backend, title="Renamed Title", genres=("drama",))
    assert result.up_to_date and backend.stats.puts == 1
    assert Catalog(backend).get("renamed").meta.title == "Renamed Title"


def test_changed_content_gets_a_new_version_and_the_old_stays(world, kind, tmp_path):
    first = world.ingest(kind, "versioned").entry
    shorter = sample("ffmpeg", tmp_path / "changed.mp4", 3, 320, 180, 30)
    backend = world.backend(kind)
    second = world.ingest(kind, "versioned", backend=backend, source=shorter).entry
    assert second.version != first.version
    assert Catalog(backend).get("versioned").version == second.version
    assert second.duration_s == pytest.approx(3, abs=0.05)
    for key, size, _ in first.objects():  # an appliance may still be filling the old version
        info = backend.head(key)
        assert info is not None and info.size == size
    assert all(r.key.startswith(f"files/versioned/{second.version}/") for r in second.renditions)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "cut-after-index", "audio-only", "empty"])
def test_bad_source_leaves_nothing(world, kind, tmp_path, damage):
    bad = tmp_path / "bad.mp4"
    if damage == "garbage":
        bad.write_bytes(b"\x00\x01not a video" * 5000)
    elif damage == "truncated":
        data = world.source.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "cut-after-index":  # moov first, so ffprobe sees 5 s; the decoder runs out halfway
        whole = tmp_path / "faststart.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(world.source), "-c", "copy", "-movflags", "+faststart",
                        str(whole)], check=True)
        data = whole.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "audio-only":
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac",
                        str(bad)], check=True)
    else:
        bad.write_bytes(b"")
    backend = world.backend(kind)
    with pytest.raises(SourceError) as err:
        world.ingest(kind, f"bad-{damage}", backend=backend, source=bad)
    assert str(bad) in str(err.value) or "bad.mp4" in str(err.value)
    assert backend.head(catalog_key(f"bad-{damage}")) is None
    assert keys_under(backend, title_prefix(f"bad-{damage}")) == {}
    assert backend.stats.puts == 0
    if kind == "s3":
        assert backend.incomplete_uploads("") == []


def test_interrupted_ingest_rerun_completes(world, kind, s3_client):
    world.ingested(kind)  # the encode exists: this test is about the upload
    title = "interrupted"
    backend = world.backend(kind)
    with pytest.raises(PowerCut):
        world.ingest(kind, title, backend=CrashingBackend(backend, files_ok=3))
    assert backend.head(catalog_key(title)) is None  # no entry before every file is in place
    assert len([k for k in keys_under(backend, title_prefix(title)) if k.endswith(".mp4")]) == 3
    leftover = _leave_an_incomplete_upload(world, kind, s3_client, title)
    fresh = world.backend(kind)
    result = world.ingest(kind, title, backend=fresh)
    assert result.aborted_uploads == leftover
    total_media = len(result.entry.renditions) + 1  # + poster
    assert fresh.stats.puts == (total_media - 3) + len(result.entry.assets) - 1 + 1  # + playlists, + entry
    entry = Catalog(fresh).get(title)
    for key, size, digest in entry.objects():
        assert fresh.has(key, size, digest)
    if kind == "s3":
        assert fresh.incomplete_uploads("") == []
    else:
        assert not any((world.location("local").path / ".tmp").iterdir())


def _leave_an_incomplete_upload(world, kind, s3_client, title) -> int:
    """What a process killed mid-upload leaves: an open multipart upload, or a temp file."""
    if kind == "s3":
        s3_client.create_multipart_upload(Bucket=BUCKET, Key=f"o/{title_prefix(title)}vdead/180p.mp4")
        return 1
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp = world.location("local").path / ".tmp"
    tmp.mkdir(exist_ok=True)
    (tmp / f"{dead.pid}-abcdef").write_bytes(b"half a file")
    return 1


def test_catalog_reads(world, kind):
    world.ingested(kind)
    world.ingest(kind, "ocean-story", title="The Ocean Story", genres=("documentary",))
    world.ingest(kind, "deep-ocean", title="Déjà Vu: Deep Ocean", genres=("documentary", "drama"))
    catalog = Catalog(world.backend(kind))
    ids = [e.title_id for e in catalog.list()]
    assert {"sample", "ocean-story", "deep-ocean"} <= set(ids) and ids == sorted(ids)
    assert catalog.get("ocean-story").meta.title == "The Ocean Story"
    assert {e.title_id for e in catalog.search("ocean")} == {"deep-ocean", "ocean-story"}
    assert [e.title_id for e in catalog.search("the ocean")][0] == "ocean-story"
    assert [e.title_id for e in catalog.search("deja vu")] == ["deep-ocean"]
    assert {e.title_id for e in catalog.search(genre="Documentary")} == {"ocean-story", "deep-ocean"}
    assert [e.title_id for e in catalog.search("ocean", genre="drama")] == ["deep-ocean"]
    assert catalog.search("no such thing") == []
    assert catalog.find("missing") is None


def test_encode_is_made_once_and_reused(world, kind):
    world.ingested(kind)
    assert world.encode.work_dir is not None
    sample_dirs = [d for d in world.encode.work_dir.iterdir() if (d / "180p.mp4").exists()]
    assert len({d.name.split("-")[0] for d in sample_dirs}) <= 2  # the sample (and the changed one)
