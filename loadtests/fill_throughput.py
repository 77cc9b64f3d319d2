"""Fill throughput from an S3 server against a plain boto3 download of the same objects, in one run.

moto's S3 server runs as its own process on 127.0.0.1 (`python -m moto.server`), so neither client
shares its interpreter. Both sides verify: boto3 `download_file` (s3transfer: 8 MiB parts, 10 threads)
of every object followed by its xxh3-128, against the fill agent (oca.fill.agent.run in this process:
presigned ranged GETs over aiohttp, parts written with pwrite into the store's partial files, hash
checked at commit, published atomically into a fresh appliance store). Rounds alternate (ABBA...), the
median of each side is reported with the ratio fill/boto3 (target >= 0.9).

    python loadtests/fill_throughput.py                     # 8 x 32 MiB, 4 rounds
    python loadtests/fill_throughput.py --objects 4 --mib 64 --rounds 2
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
import xxhash  # noqa: E402
from boto3.s3.transfer import TransferConfig as Boto3Transfer  # noqa: E402

from contracts.keys import new_secret  # noqa: E402
from contracts.manifest import ManifestFile, Source, encode_manifest, make_manifest  # noqa: E402
from oca.fill import log as fill_log  # noqa: E402
from oca.fill.agent import EXIT_OK, RunOptions, run  # noqa: E402
from oca.fill.config import FillConfig, OriginConfig, TransferConfig  # noqa: E402
from oca import config as oca_config  # noqa: E402
from origin.hashing import hash_file  # noqa: E402
from tests.support import free_port, stop_process, wait_for_port  # noqa: E402

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
BUCKET = "media"


def appliance(root: Path) -> Path:
    for d in ("ssd0", "hdd0"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "keys.toml").write_text(f'signing = "k1"\n[keys]\nk1 = "{new_secret()}"\n')
    cfg = root / "oca.toml"
    cfg.write_text('[appliance]\nid = "bench"\n[tokens]\nkey_file = "keys.toml"\n[store]\nindex = "state/index.db"\n'
                   '[[tiers.hdd]]\npath = "hdd0"\n[[tiers.ssd]]\npath = "ssd0"\n')
    return cfg


def run_boto3(client, keys: list[str], hashes: dict[str, str], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    config = Boto3Transfer()  # the defaults: 8 MiB parts, 10 threads
    for key in keys:
        path = out / key.replace("/", "_")
        client.download_file(BUCKET, key, str(path), Config=config)
        if hash_file(path) != hashes[key]:
            raise SystemExit(f"boto3: {key} does not verify")
    return time.perf_counter() - started


def run_fill(root: Path, endpoint: str, keys: list[str], sizes: dict[str, int], hashes: dict[str, str],
             transfer: TransferConfig) -> float:
    cfg_path = appliance(root)
    files = [ManifestFile(k, sizes[k], hashes[k], "hdd", i, (Source("origin", s3=f"s3://{BUCKET}/{k}"),))
             for i, k in enumerate(keys)]
    manifest = root / "manifest.json"
    manifest.write_bytes(encode_manifest(make_manifest("bench", files, time.time())))
    cfg = FillConfig(transfer=transfer, origin=OriginConfig(endpoint_url=endpoint, region="us-east-1",
                                                            verify_catalog=False))
    oca = oca_config.load(cfg_path)
    started = time.perf_counter()
    code = asyncio.run(run(oca, cfg, RunOptions(manifest_file=manifest, ignore_window=True, progress=False)))
    elapsed = time.perf_counter() - started
    if code != EXIT_OK:
        raise SystemExit(f"fill agent exited with {code}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", type=int, default=8)
    p.add_argument("--mib", type=int, default=32, help="size of each object")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--max-files", type=int, default=TransferConfig().max_files)
    p.add_argument("--parts-per-file", type=int, default=TransferConfig().parts_per_file)
    p.add_argument("--part-mib", type=int, default=TransferConfig().part_bytes >> 20)
    args = p.parse_args(argv)
    os.environ.update(AWS_ENV)
    fill_log.QUIET = True
    tmp = Path(tempfile.mkdtemp(prefix="fill-throughput-"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, 30, alive=lambda: server.poll() is None)
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        keys, sizes, hashes = [], {}, {}
        for i in range(args.objects):
            data = os.urandom(args.mib << 20)
            key = f"files/bench/v0000000000000000/r{i}.mp4"
            client.put_object(Bucket=BUCKET, Key=key, Body=data)
            keys.append(key)
            sizes[key], hashes[key] = len(data), xxhash.xxh3_128_hexdigest(data)
        total = sum(sizes.values())
        transfer = TransferConfig(rate_limit_bps=0, max_files=args.max_files, parts_per_file=args.parts_per_file,
                                  part_bytes=args.part_mib << 20)
        times: dict[str, list[float]] = {"boto3": [], "fill": []}
        for r in range(args.rounds):
            order = ("boto3", "fill") if r % 2 == 0 else ("fill", "boto3")
            for side in order:
                where = tmp / f"{side}-{r}"
                if side == "boto3":
                    t = run_boto3(client, keys, hashes, where)
                else:
                    t = run_fill(where, endpoint, keys, sizes, hashes, transfer)
                times[side].append(t)
                shutil.rmtree(where, ignore_errors=True)
                print(f"round {r + 1} {side:5}: {total / t / 1e6:7.1f} MB/s ({t:.2f} s)", flush=True)
        med = {s: statistics.median(v) for s, v in times.items()}
        ratio = med["boto3"] / med["fill"]
        print(f"\n{args.objects} x {args.mib} MiB, verification on both sides; fill: {args.max_files} files x "
              f"{args.parts_per_file} parts of {args.part_mib} MiB")
        print(f"median boto3 download_file + xxh3: {total / med['boto3'] / 1e6:7.1f} MB/s")
        print(f"median fill agent (verify+publish): {total / med['fill'] / 1e6:7.1f} MB/s")
        print(f"ratio fill/boto3: {ratio:.2f}  {'PASS' if ratio >= 0.9 else 'MISS'} (target >= 0.9)")
    finally:
        stop_process(server)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
