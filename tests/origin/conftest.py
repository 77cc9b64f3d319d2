"""Fixtures for the origin tests. One sample title is made and encoded once per session (the encode
is kept in a shared work directory and reused); every backend test runs against the local directory
and against a real S3 API server over HTTP (moto's ThreadedMotoServer on 127.0.0.1; boto3 unpatched)."""
from __future__ import annotations

import os
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import msgspec
import pytest
from moto.server import ThreadedMotoServer
from origin_testkit import AWS_ENV, BUCKET, SAMPLE_FPS, SAMPLE_SECONDS, TEST_CONFIG, OriginProcess, free_port

from contracts.catalog import Metadata
from origin.backends import Backend, open_backend
from origin.config import EncodeConfig, Location, OriginConfig, S3Config, parse
from origin.encode import sample
from origin.ingest import IngestRequest, IngestResult, ingest




@pytest.fixture(scope="session", autouse=True)
def aws_env():
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def moto_endpoint(aws_env):
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def s3_client(moto_endpoint):
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def base_config(tmp_path_factory) -> OriginConfig:
    work = tmp_path_factory.mktemp("work")
    cfg = parse(tomllib.loads(TEST_CONFIG))
    return msgspec.structs.replace(cfg, encode=msgspec.structs.replace(cfg.encode, work_dir=work))


@pytest.fixture(scope="session")
def encode_cfg(base_config) -> EncodeConfig:
    return base_config.encode


@pytest.fixture(scope="session")
def sample_source(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    return sample("ffmpeg", out / "sample.mp4", SAMPLE_SECONDS, 320, 180, SAMPLE_FPS)


@dataclass
class World:
    """The two origins of the session and the sample title ingested into each."""

    root: Path
    endpoint: str
    encode: EncodeConfig
    s3: S3Config
    source: Path
    results: dict[str, IngestResult] = field(default_factory=dict)

    def location(self, kind: str) -> Location:
        if kind == "local":
            return Location(path=self.root / "origin")
        return Location(bucket=BUCKET, prefix="o", endpoint_url=self.endpoint, region="us-east-1")

    def backend(self, kind: str) -> Backend:
        """A fresh backend object (zeroed stats) on the session's origin of that kind."""
        return open_backend(self.location(kind), self.s3)

    def config(self, kind: str) -> OriginConfig:
        return OriginConfig(location=self.location(kind), s3=self.s3, encode=self.encode)

    def ingest(self, kind: str, title_id: str = "sample", backend: Backend | None = None, **kw) -> IngestResult:
        default_title = "Sample Title" if title_id == "sample" else title_id.replace("-", " ").title()
        meta = Metadata(title_id, kw.pop("title", default_title), kw.pop("genres", ("test", "animation")),
                        kw.pop("languages", ("en",)), kw.pop("release_date", "2024-05-01"))
        request = IngestRequest(meta, source=kw.pop("source", self.source), keep_work=True, **kw)
        return ingest(request, backend or self.backend(kind), self.encode)

    def ingested(self, kind: str) -> IngestResult:
        if kind not in self.results:
            self.results[kind] = self.ingest(kind)
        return self.results[kind]

    def work_dir(self) -> Path:
        """The kept encode of the sample (what --encoded DIR ingests)."""
        self.ingested("local")
        assert self.encode.work_dir is not None
        dirs = [d for d in self.encode.work_dir.iterdir() if (d / "encoded.json").is_file()
                and (d / "144p.mp4").is_file()]
        return sorted(dirs, key=lambda d: d.stat().st_mtime)[0]


@pytest.fixture(scope="session")
def world(tmp_path_factory, moto_endpoint, base_config, sample_source) -> World:
    return World(tmp_path_factory.mktemp("origins"), moto_endpoint, base_config.encode, base_config.s3,
                 sample_source)


@pytest.fixture(params=["local", "s3"])
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def keyfile(tmp_path_factory) -> Path:
    from contracts.keys import write_new_keyfile

    path = tmp_path_factory.mktemp("keys") / "keys.toml"
    write_new_keyfile(path)
    return path


def _serve(world, keyfile, tmp_path_factory, sendfile: bool):
    world.ingested("local")
    conf = tmp_path_factory.mktemp("serve") / "origin.toml"
    conf.write_text(f'[origin]\nlocation = "{world.location("local").path}"\n\n'
                    f'[serve]\nport = 0\nkey_file = "{keyfile}"\nchunk_bytes = 65536\n'
                    f'sendfile = {str(sendfile).lower()}\n')
    origin = OriginProcess(conf)
    yield Served(origin.url, origin.proc, conf)
    origin.stop()


@pytest.fixture(scope="session")
def served(world, keyfile, tmp_path_factory):
    """`origin serve` (a real subprocess) over the local origin holding the ingested sample; bodies by
    sendfile (the default)."""
    yield from _serve(world, keyfile, tmp_path_factory, sendfile=True)


@pytest.fixture(scope="session")
def served_copying(world, keyfile, tmp_path_factory):
    """The same with `sendfile = false`: bodies read and written through Python."""
    yield from _serve(world, keyfile, tmp_path_factory, sendfile=False)


@pytest.fixture(params=["sendfile", "copy"])
def either(request):
    """Each range test runs against both ways of sending a body."""
    return request.getfixturevalue("served" if request.param == "sendfile" else "served_copying")


@dataclass
class Served:
    url: str
    proc: subprocess.Popen
    config: Path


def wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
