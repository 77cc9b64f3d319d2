"""The storage interface against both backends, and S3 faults through a proxy that answers with real
S3 errors over HTTP: throttling and 5xx retried with backoff, a failed multipart upload aborted."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest
from origin_testkit import BUCKET
from origin_testkit import FaultProxy

from origin.backends import PutItem, open_backend
from origin.catalog import Catalog
from origin.core.errors import BackendError, ObjectNotFound
from origin.hashing import hash_file


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(os.urandom(12 << 20))  # three 5 MiB parts on S3
    return path, hash_file(path)


def item(key: str, path: Path, digest: str) -> PutItem:
    return PutItem(key, path, path.stat().st_size, digest, "application/octet-stream")


def test_put_head_get_list_delete(world, kind, big_file, tmp_path):
    backend = world.backend(kind)
    path, digest = big_file
    small = tmp_path / "small.txt"
    small.write_bytes(b"hello origin")
    progress: list[int] = []
    backend.put_files([item("t/unit/big.bin", path, digest), item("t/unit/small.txt", small, hash_file(small))],
                      progress.append)
    assert sum(progress) == path.stat().st_size + small.stat().st_size
    assert backend.stats.puts == 2
    info = backend.head("t/unit/big.bin")
    assert info is not None and info.size == 12 << 20 and info.xxh3 == digest
    assert backend.has("t/unit/big.bin", 12 << 20, digest)
    assert not backend.has("t/unit/big.bin", 12 << 20, "0" * 32)
    assert not backend.has("t/unit/big.bin", 5, digest)
    assert backend.get_range("t/unit/big.bin", 5 << 20, 10) == path.read_bytes()[5 << 20:(5 << 20) + 10]
    assert backend.get_bytes("t/unit/small.txt") == b"hello origin"
    assert [i.key for i in backend.list("t/unit/")] == ["t/unit/big.bin", "t/unit/small.txt"]
    assert [i.key for i in backend.list("t/unit/s")] == ["t/unit/small.txt"]
    backend.put_bytes("t/unit/note.json", b"{}", "application/json", xxh3="abc")
    assert backend.head("t/unit/note.json").xxh3 == "abc"
    for key in ("t/unit/big.bin", "t/unit/small.txt", "t/unit/note.json"):
        backend.delete(key)
    assert list(backend.list("t/unit/")) == [] and backend.head("t/unit/big.bin") is None
    with pytest.raises(ObjectNotFound):
        backend.get_bytes("t/unit/big.bin")
    assert backend.incomplete_uploads("") == [] if kind == "s3" else True


def test_local_keys_cannot_escape(world):
    backend = world.backend("local")
    for key in ("../x", "/etc/passwd", ".tmp/x", "a//b"):
        with pytest.raises(ObjectNotFound):
            backend.get_bytes(key)


def test_local_abort_removes_only_dead_writers_temp_files(world):
    backend = world.backend("local")
    tmp = world.location("local").path / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp / f"{dead.pid}-aaaa").write_bytes(b"x")
    (tmp / f"{os.getpid()}-bbbb").write_bytes(b"mine, still writing")
    assert backend.abort_incomplete("files/") == 1
    assert [p.name for p in tmp.iterdir()] == [f"{os.getpid()}-bbbb"]
    (tmp / f"{os.getpid()}-bbbb").unlink()


def proxied(world, proxy: FaultProxy, **s3):
    location = replace(world.location("s3"), endpoint_url=proxy.url)
    return open_backend(location, msgspec.structs.replace(world.s3, **s3))


def test_throttling_and_5xx_are_retried(world, big_file, tmp_path):
    """Every third request answers 503 SlowDown or 500: the upload, reads and listing still succeed."""
    path, digest = big_file
    rule = lambda method, url, n: (503 if n % 6 == 0 else 500) if n % 3 == 0 else None  # noqa: E731
    with FaultProxy(world.endpoint, rule) as proxy:
        backend = proxied(world, proxy)
        backend.put_files([item("t/retry/big.bin", path, digest)])
        backend.put_bytes("t/retry/a.json", b"[1]", "application/json")
        assert backend.get_bytes("t/retry/a.json") == b"[1]"
        assert backend.has("t/retry/big.bin", path.stat().st_size, digest)
        assert len(list(backend.list("t/retry/"))) == 2
    assert {status for _, _, status in proxy.injected} == {500, 503}
    direct = world.backend("s3")
    assert direct.get_range("t/retry/big.bin", 0, 1 << 20) == path.read_bytes()[:1 << 20]
    assert direct.incomplete_uploads("") == []


def test_whole_ingest_through_a_throttling_s3(world):
    world.ingested("s3")
    rule = lambda method, url, n: 503 if n in (5, 12, 20) else None  # noqa: E731  (each costs a backoff)
    with FaultProxy(world.endpoint, rule) as proxy:
        backend = proxied(world, proxy)
        result = world.ingest("s3", "throttled", backend=backend)
    assert len(proxy.injected) == 3 and result.uploaded > 0
    entry = Catalog(world.backend("s3")).get("throttled")
    assert all(world.backend("s3").has(k, s, d) for k, s, d in entry.objects())


@pytest.mark.parametrize("status,attempts", [(400, 4), (500, 2)], ids=["client-error", "5xx-past-max-attempts"])
def test_failed_multipart_upload_is_aborted(world, big_file, s3_client, status, attempts):
    path, digest = big_file
    rule = lambda method, url, n: status if method == "PUT" and "partNumber=2" in url else None  # noqa: E731
    with FaultProxy(world.endpoint, rule) as proxy:
        backend = proxied(world, proxy, max_attempts=attempts)
        with pytest.raises(BackendError) as err:
            backend.put_files([item(f"t/abort-{status}/big.bin", path, digest)])
    assert f"t/abort-{status}/big.bin" in str(err.value)
    assert len(proxy.injected) == 1 if status == 400 else len(proxy.injected) >= attempts
    assert s3_client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert world.backend("s3").head(f"t/abort-{status}/big.bin") is None


def test_abort_incomplete_sweeps_what_a_killed_process_left(world, s3_client):
    s3_client.create_multipart_upload(Bucket=BUCKET, Key="o/files/killed/v1/a.mp4")
    s3_client.create_multipart_upload(Bucket=BUCKET, Key="o/files/other/v1/a.mp4")
    backend = world.backend("s3")
    assert backend.abort_incomplete("files/killed/") == 1
    assert [k for k, _ in backend.incomplete_uploads("")] == ["o/files/other/v1/a.mp4"]
    assert backend.abort_incomplete("files/") == 1


def test_missing_bucket_is_a_clear_error(world):
    backend = open_backend(replace(world.location("s3"), bucket="no-such-bucket"), world.s3)
    with pytest.raises(BackendError, match="no-such-bucket"):
        backend.get_bytes("catalog/x.json")
