#!/usr/bin/env python3
"""Upload throughput of the origin's ingest uploader against a plain boto3 `upload_file` of the same
files to the same S3 server, in one run.

Strategy: one S3 API server (moto's, in its own process so its CPU is not our GIL's) on 127.0.0.1;
N random files of S bytes. Each round uploads every file both ways, in alternating order (ABBA) so
whatever else loads the machine hits both alike, and deletes them again:
  plain   boto3 `client.upload_file(path, bucket, key)` per file, one after another, default config
          (boto3's own multipart: 8 MiB parts, 10 threads);
  origin  the ingest's upload step: a size+xxh3 check per object (HEAD), then S3Backend.put_files
          for the missing ones (one transfer manager for the batch, parallel parts, metadata).
The result is the median throughput of each over the rounds and the ratio origin/plain (target
>= 0.9). Absolute MB/s on a shared 2-core machine mostly measure moto; the ratio is the result.
Beside it, the uploader's own CPU (this process, all threads) per GB: less noisy than wall time when
other work shares the cores.

    python loadtests/origin_upload.py [--files 4] [--mib 64] [--rounds 3] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from origin.backends import PutItem  # noqa: E402
from origin.backends.s3 import S3Backend  # noqa: E402
from origin.config import Location, S3Config  # noqa: E402
from origin.hashing import hash_file  # noqa: E402

BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto server did not start")


def make_files(folder: Path, count: int, mib: int) -> list[tuple[Path, str]]:
    files = []
    for i in range(count):
        path = folder / f"r{i}.mp4"
        with open(path, "wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(1 << 20))
        files.append((path, hash_file(path)))
    return files


def plain(client, files, prefix: str) -> float:
    start = time.perf_counter()
    for path, _ in files:
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
    return time.perf_counter() - start


def origin(backend: S3Backend, files, prefix: str) -> float:
    items = [PutItem(f"{prefix}/{p.name}", p, p.stat().st_size, digest, "video/mp4") for p, digest in files]
    start = time.perf_counter()
    missing = [i for i in items if not backend.has(i.key, i.size, i.xxh3)]
    backend.put_files(missing)
    return time.perf_counter() - start


def clear(client, prefix: str) -> None:
    for obj in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ.setdefault(k, v)
    proc, endpoint = start_moto()
    folder = Path(tempfile.mkdtemp(prefix="origin-upload-"))
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        backend = S3Backend(Location(bucket=BUCKET, prefix="origin", endpoint_url=endpoint, region="us-east-1"),
                            S3Config())
        files = make_files(folder, args.files, args.mib)
        total = sum(p.stat().st_size for p, _ in files)
        times: dict[str, list[float]] = {"plain": [], "origin": []}
        cpu: dict[str, list[float]] = {"plain": [], "origin": []}
        for r in range(args.rounds):
            order = ["plain", "origin"] if r % 2 == 0 else ["origin", "plain"]
            for name in order:
                prefix = f"r{r}-{name}"
                cpu_start = time.process_time()
                elapsed = plain(client, files, f"plain/{prefix}") if name == "plain" else origin(
                    backend, files, prefix)
                times[name].append(elapsed)
                cpu[name].append((time.process_time() - cpu_start) / (total / 1e9))
                print(f"round {r} {name:6s} {total / elapsed / 1e6:8.1f} MB/s", flush=True)
                clear(client, "plain/" if name == "plain" else "origin/")
        mbps = {k: total / statistics.median(v) / 1e6 for k, v in times.items()}
        ratio = mbps["origin"] / mbps["plain"]
        verdict = "PASS" if ratio >= 0.9 else "MISS"
        cpu_s_per_gb = {k: statistics.median(v) for k, v in cpu.items()}
        print(f"{args.files} x {args.mib} MiB, {args.rounds} rounds, median: plain {mbps['plain']:.1f} MB/s, "
              f"origin {mbps['origin']:.1f} MB/s, ratio {ratio:.2f} (target >= 0.9: {verdict}); uploader CPU "
              f"s/GB: plain {cpu_s_per_gb['plain']:.2f}, origin {cpu_s_per_gb['origin']:.2f}")
        if args.json:
            args.json.write_text(json.dumps({"files": args.files, "mib": args.mib, "rounds": args.rounds,
                                             "mbps": mbps, "ratio": ratio, "times_s": times,
                                             "cpu_s_per_gb": cpu_s_per_gb}, indent=2))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
