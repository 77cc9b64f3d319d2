"""Ingest: a source (or a ladder encoded elsewhere) becomes files in the origin and a catalog entry.

Order is what makes it safe to interrupt and to repeat:
1. hash and probe the source, plan the ladder; if the catalog already holds this source with this
   plan and every file is in place, stop: nothing to encode or upload (metadata edits are applied);
2. encode into a work directory named by source hash and plan, marked complete only at the end (a
   re-run after an interrupted upload reuses it instead of encoding again);
3. analyse each file (byte ranges, codec), hash it, derive the content version and keys;
4. abort what an interrupted run left (multipart uploads, temp files), upload only objects that are
   not already there with the same size and xxh3-128, then the manifests;
5. write the catalog entry LAST: an entry implies every file it names is complete.
A failure before 5 leaves no entry; a failed multipart upload is aborted. Old versions stay (fill
manifests may list them) until `origin gc`.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from contracts import catalog as catalog_schema
from contracts.catalog import Metadata, TitleEntry, validate_metadata
from origin import analyze, encode
from origin.backends import Backend, PutItem
from origin.catalog import Catalog
from origin.config import EncodeConfig
from origin.core import ffargs, ladder
from origin.core.assemble import MediaFile, assemble
from origin.core.errors import MediaError, SourceError, ToolMissing, UsageError
from origin.core.layout import POSTER, title_prefix
from origin.hashing import hash_file
from origin.progress import QUIET, Reporter

_MARKER = "encoded.json"
_MIN_DECODED_FRACTION = 0.9  # a rendition much shorter than the probed duration: the source is damaged


@dataclass(frozen=True)
class IngestRequest:
    meta: Metadata
    source: Path | None = None
    encoded_dir: Path | None = None
    keep_work: bool = False
    force: bool = False  # encode again even when the catalog already has this source


@dataclass(frozen=True)
class IngestResult:
    entry: TitleEntry
    uploaded: int  # objects written, the catalog entry included
    skipped: int  # objects already in place
    bytes_uploaded: int
    up_to_date: bool  # nothing was encoded: the catalog had this source already
    aborted_uploads: int


def ingest(req: IngestRequest, backend: Backend, cfg: EncodeConfig, reporter: Reporter = QUIET) -> IngestResult:
    validate_metadata(req.meta)
    if (req.source is None) == (req.encoded_dir is None):
        raise UsageError("ingest takes a SOURCE file or --encoded DIR (one of them)")
    if req.encoded_dir is not None:
        return _ingest_encoded(req, backend, cfg, reporter)
    return _ingest_source(req, backend, cfg, reporter)


def _ingest_source(req: IngestRequest, backend: Backend, cfg: EncodeConfig, reporter: Reporter) -> IngestResult:
    source = req.source
    assert source is not None
    info = encode.probe(cfg.ffprobe, source)  # first: a corrupt file fails fast, before any hashing
    plan = ladder.plan(info, ladder.validate_ladder(cfg.ladder), cfg.settings, encode.encoders(cfg.ffmpeg),
                       req.meta.languages)
    for name, why in plan.skipped:
        reporter.note(f"skipping rendition {name}: {why}")
    with reporter.bar(f"hash {source.name}", source.stat().st_size) as update:
        source_hash = hash_file(source, update)
    record = {"kind": "encode", "file": source.name, "size": source.stat().st_size, "xxh3": source_hash,
              "plan": plan.fingerprint()}
    catalog = Catalog(backend)
    if not req.force:
        done = _already_ingested(catalog, backend, req.meta, record)
        if done is not None:
            return done
    work = _work_dir(cfg, source_hash, plan.fingerprint())
    media, poster = _encoded(work, source, plan, cfg, reporter)
    result = _publish(req.meta, media, work, poster, record, backend, catalog, reporter)
    if not req.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _already_ingested(catalog: Catalog, backend: Backend, meta: Metadata, record: dict) -> IngestResult | None:
    entry = catalog.find(meta.title_id)
    if entry is None or {k: entry.source.get(k) for k in ("xxh3", "plan")} != {k: record[k] for k in ("xxh3", "plan")}:
        return None
    if not all(backend.has(key, size, digest) for key, size, digest in entry.objects()):
        return None
    updated = _with_meta(entry, meta)
    if updated == entry:
        return IngestResult(entry, 0, len(entry.objects()), 0, True, 0)
    catalog.put(updated)
    return IngestResult(updated, 1, len(entry.objects()), 0, True, 0)


def _with_meta(entry: TitleEntry, meta: Metadata) -> TitleEntry:
    if not meta.languages:
        meta = replace(meta, languages=entry.meta.languages)
    return replace(entry, meta=meta)


def _work_dir(cfg: EncodeConfig, source_hash: str, plan_fp: str) -> Path:
    root = cfg.work_dir or Path(tempfile.gettempdir()) / "opencdn-origin-work"
    return root / f"{source_hash[:16]}-{plan_fp}"  # by content, not title: one encode serves both


def _encoded(work: Path, source: Path, plan: ladder.Plan, cfg: EncodeConfig,
             reporter: Reporter) -> tuple[list[MediaFile], Path]:
    """Encode into `work` (or reuse a complete earlier encode there); analyse and hash the outputs."""
    if _marked(work / _MARKER, plan.fingerprint()):
        reporter.note(f"reusing the encode in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
        try:
            with reporter.bar(f"encode {len(plan.video)}+{len(plan.audio)} renditions", plan.duration_s, "s") as up:
                encode.encode(cfg.ffmpeg, source, plan, work, cfg.threads, up)
            encode.poster(cfg.ffmpeg, source, ffargs.poster_time(plan.duration_s), plan.settings.poster_height,
                          work / POSTER)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)  # no half encode to be mistaken for a whole one
            raise
        (work / _MARKER).write_text(json.dumps({"plan": plan.fingerprint()}))
    languages = {a.name: a.language for a in plan.audio}
    names = [v.name for v in plan.video] + [a.name for a in plan.audio]
    media = _analyse(work, names, languages, reporter)
    for m in media:
        if m.layout.kind == "video" and m.layout.duration_s < _MIN_DECODED_FRACTION * plan.duration_s:
            shutil.rmtree(work, ignore_errors=True)
            raise SourceError(f"{source}: corrupt or truncated: decoded {m.layout.duration_s:.1f} s of "
                              f"{plan.duration_s:.1f} s")
    return media, work / POSTER


def _marked(marker: Path, fingerprint: str) -> bool:
    """True when `marker` records a complete encode of this plan."""
    try:
        return json.loads(marker.read_text()).get("plan") == fingerprint
    except (OSError, ValueError, AttributeError):
        return False


def _analyse(folder: Path, names: list[str], languages: dict[str, str], reporter: Reporter) -> list[MediaFile]:
    paths = [folder / f"{name}.mp4" for name in names]
    total = sum(p.stat().st_size for p in paths)
    out = []
    with reporter.bar("hash renditions", total) as update:
        for name, path in zip(names, paths, strict=True):
            lay = analyze.layout_of(path)
            out.append(MediaFile(name, path.stat().st_size, hash_file(path, update), lay, languages.get(name)))
    return out


def _ingest_encoded(req: IngestRequest, backend: Backend, cfg: EncodeConfig, reporter: Reporter) -> IngestResult:
    folder = req.encoded_dir
    assert folder is not None
    if not folder.is_dir():
        raise SourceError(f"{folder}: not a directory")
    files = sorted(folder.glob("*.mp4"))
    if not files:
        raise SourceError(f"{folder}: no .mp4 renditions in it")
    names = [p.stem for p in files]
    for name in names:
        if not ladder.RENDITION_NAME.fullmatch(name):
            raise SourceError(f"{folder}: rendition file name {name!r}.mp4: use 1-32 of [A-Za-z0-9_-]")
    # the i-th audio file (by name) takes the i-th --languages entry unless its mdhd names a language
    media = _analyse(folder, names, {}, reporter)
    audio_names = [m.name for m in media if m.layout.kind == "audio"]
    given = dict(zip(audio_names, req.meta.languages, strict=False))
    media = [replace(m, language=given.get(m.name)) if m.name in given and m.layout.language == "und" else m
             for m in media]
    poster: Path | None = folder / POSTER
    made = None
    if not poster.is_file():
        poster = made = _poster_from(media, folder, cfg, reporter)
    record = {"kind": "encoded", "dir": folder.name}
    try:
        return _publish(req.meta, media, folder, poster, record, backend, Catalog(backend), reporter)
    finally:
        if made is not None:
            shutil.rmtree(made.parent, ignore_errors=True)


def _poster_from(media: list[MediaFile], folder: Path, cfg: EncodeConfig, reporter: Reporter) -> Path | None:
    videos = sorted((m for m in media if m.layout.kind == "video"), key=lambda m: m.layout.entry.height or 0)
    if not videos:
        raise MediaError(f"{folder}: no video rendition")
    out = Path(tempfile.mkdtemp(prefix="origin-poster-")) / POSTER
    try:
        encode.poster(cfg.ffmpeg, folder / f"{videos[-1].name}.mp4", ffargs.poster_time(videos[-1].layout.duration_s),
                      cfg.settings.poster_height, out)
    except ToolMissing as exc:
        reporter.note(f"no poster: {exc}")
        return None
    return out


def _publish(meta: Metadata, media: list[MediaFile], folder: Path, poster: Path | None, record: dict,
             backend: Backend, catalog: Catalog, reporter: Reporter) -> IngestResult:
    poster_info = (poster.stat().st_size, hash_file(poster)) if poster is not None else None
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    entry, blobs = assemble(meta, media, poster_info, record, now)
    aborted = backend.abort_incomplete(title_prefix(meta.title_id))
    if aborted:
        reporter.note(f"removed {aborted} incomplete upload(s) an interrupted run left")
    items = [PutItem(r.key, folder / f"{r.name}.mp4", r.size, r.xxh3, "video/mp4") for r in entry.renditions]
    if poster is not None and poster_info is not None and entry.poster is not None:
        items.append(PutItem(entry.poster, poster, poster_info[0], poster_info[1], "image/jpeg"))
    missing = [i for i in items if not backend.has(i.key, i.size, i.xxh3)]
    blobs_missing = [b for b in blobs if not backend.has(b.key, len(b.data), b.xxh3)]
    before = backend.stats.bytes_put
    with reporter.bar(f"upload to {backend.describe()}", sum(i.size for i in missing)) as update:
        backend.put_files(missing, update)
    for blob in blobs_missing:
        backend.put_bytes(blob.key, blob.data, blob.content_type, blob.xxh3)
    wrote_entry = _put_entry(catalog, entry)
    uploaded = len(missing) + len(blobs_missing) + wrote_entry
    skipped = len(items) + len(blobs) - len(missing) - len(blobs_missing)
    return IngestResult(entry, uploaded, skipped, backend.stats.bytes_put - before, False, aborted)


def _put_entry(catalog: Catalog, entry: TitleEntry) -> int:
    """Write the entry unless the stored one describes the same files and metadata: 1 if written.
    (When and from what it was made do not count: the same content ingested again changes nothing.)"""
    current = catalog.find(entry.title_id)
    if current is not None and _same(current, entry):
        return 0
    catalog.put(entry)
    return 1


def _same(a: TitleEntry, b: TitleEntry) -> bool:
    da, db = catalog_schema.to_dict(a), catalog_schema.to_dict(b)
    for volatile in ("ingestedAt", "source"):
        da.pop(volatile), db.pop(volatile)
    return da == db
