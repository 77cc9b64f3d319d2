"""The `origin` command line: every subcommand, the same origin naming for both backends, JSON out,
exit codes, and `origin ingest` run as a real process."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest
from origin_testkit import BUCKET, TEST_CONFIG
from origin_testkit import ffprobe_streams

from contracts.catalog import Metadata
from contracts.keys import load_keyring
from contracts.token import Scope, parse_query, verify
from origin.catalog import Catalog
from origin.cli import main
from origin.ingest import IngestRequest, ingest


def origin_args(world, kind) -> list[str]:
    if kind == "local":
        return ["--origin", str(world.location("local").path)]
    return ["--origin", f"s3://{BUCKET}/o", "--endpoint-url", world.endpoint]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_titles_and_show(world, kind, capsys):
    entry = world.ingested(kind).entry
    code, out, _ = run(capsys, "titles", *origin_args(world, kind))
    assert code == 0 and "sample" in [t["id"] for t in json.loads(out)]
    code, out, _ = run(capsys, "titles", *origin_args(world, kind), "-q", "sample title", "--genre", "test")
    assert code == 0 and json.loads(out)[0]["id"] == "sample"
    code, out, _ = run(capsys, "show", *origin_args(world, kind), "sample")
    shown = json.loads(out)
    assert code == 0 and shown["version"] == entry.version and len(shown["renditions"]) == len(entry.renditions)
    code, _, err = run(capsys, "show", *origin_args(world, kind), "nope")
    assert code == 1 and "no title 'nope'" in err


def test_ingest_as_a_process(world, kind, tmp_path):
    world.ingested(kind)
    conf = tmp_path / "origin.toml"
    conf.write_text(TEST_CONFIG)
    args = [sys.executable, "-m", "origin.cli", "ingest", str(world.source), "-c", str(conf),
            *origin_args(world, kind), "--title-id", "cli-title", "--title", "From The CLI",
            "--genres", "drama,comedy", "--genres", "family", "--languages", "en", "--release-date", "2001-02-03",
            "--work-dir", str(world.encode.work_dir), "--keep-work"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["id"] == "cli-title" and summary["genres"] == ["drama", "comedy", "family"]
    assert summary["releaseDate"] == "2001-02-03" and len(summary["bitrates"]) == 6
    assert done.stderr.strip().splitlines()[-1].startswith("origin: ingested: cli-title ")
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already up to date" in again.stderr and "0 object(s) uploaded" in again.stderr


@pytest.mark.parametrize("argv,code,message", [
    (["ingest", "/no/such.mp4", "--title-id", "x", "--title", "X"], 2, "no such file"),
    (["ingest", "{garbage}", "--title-id", "x", "--title", "X"], 2, "not a media file"),
    (["ingest", "{garbage}", "--title-id", "bad/id", "--title", "X"], 2, "title id"),
    (["ingest", "{garbage}", "--title-id", "x", "--title", "X", "--release-date", "1.1.2000"], 2, "release date"),
    (["ingest", "--title-id", "x", "--title", "X"], 2, "SOURCE file or --encoded"),
    (["titles", "--origin", "ftp://x"], 2, "--origin"),
    (["titles"], 2, "no origin"),
], ids=["missing", "garbage", "bad-id", "bad-date", "no-source", "bad-origin", "no-origin"])
def test_bad_input_exits_2(world, capsys, tmp_path, argv, code, message):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"nope" * 100)
    argv = [a.replace("{garbage}", str(garbage)) for a in argv]
    if argv[0] == "ingest":
        argv += ["--origin", str(tmp_path / "origin")]
    got, _, err = run(capsys, *argv)
    assert got == code and message in err
    assert not (tmp_path / "origin" / "catalog").exists()


def test_check_config(capsys, tmp_path, keyfile):
    good = tmp_path / "good.toml"
    good.write_text(f'[origin]\nlocation = "data"\n[serve]\nkey_file = "{keyfile}"\n')
    code, out, _ = run(capsys, "check-config", "-c", str(good))
    assert code == 0 and "ok" in out and str(tmp_path / "data") in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[encode]\nsegment_s = 0.1\n")
    code, _, err = run(capsys, "check-config", "-c", str(bad))
    assert code == 2 and "encode.segment_s: must be at least 1" in err


def test_sample(capsys, tmp_path):
    code, out, _ = run(capsys, "sample", str(tmp_path), "--seconds", "1", "--size", "160x90", "--fps", "10")
    assert code == 0
    streams = ffprobe_streams(out.strip())
    assert {s["codec_type"] for s in streams} == {"video", "audio"}
    assert next(s for s in streams if s["codec_type"] == "video")["width"] == 160
    assert run(capsys, "sample", str(tmp_path), "--size", "big")[0] == 2


def test_token(capsys, keyfile):
    code, out, _ = run(capsys, "token", "--key-file", str(keyfile), "--ttl-s", "60")
    grant = verify("/any", parse_query(out.strip()), load_keyring(keyfile), time.time(), None, Scope.FILL)
    assert code == 0 and grant.scope is Scope.FILL and grant.holder == "operator"


def test_gc_keeps_current_and_referenced_versions(world, kind, capsys, tmp_path):
    first = world.ingest(kind, "gc-me").entry
    subset = tmp_path / "subset"
    shutil.copytree(world.work_dir(), subset)
    (subset / "144p-av1.mp4").unlink()
    second = ingest(IngestRequest(Metadata("gc-me", "GC"), encoded_dir=subset), world.backend(kind),
                    world.encode).entry
    assert second.version != first.version
    old = [k for k, _, _ in first.objects()]
    referenced = tmp_path / "manifest-keys.txt"
    code, out, _ = run(capsys, "gc", *origin_args(world, kind), "--title", "gc-me")
    plan = json.loads(out)
    assert code == 0 and set(old) <= set(plan["delete"]) and not plan["applied"]
    assert not {k for k, _, _ in second.objects()} & set(plan["delete"])
    referenced.write_text(old[0] + "\n")
    code, out, _ = run(capsys, "gc", *origin_args(world, kind), "--title", "gc-me", "--referenced", str(referenced))
    plan = json.loads(out)
    assert not set(old) & set(plan["delete"]) and set(old) <= set(plan["keptReferenced"])
    code, out, _ = run(capsys, "gc", *origin_args(world, kind), "--title", "gc-me", "--apply")
    backend = world.backend(kind)
    assert all(backend.head(k) is None for k in old)
    for title in ("gc-me", "sample"):
        entry = Catalog(backend).find(title)
        if entry is not None:
            assert all(backend.has(k, s, d) for k, s, d in entry.objects())
