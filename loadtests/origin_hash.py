#!/usr/bin/env python3
"""xxh3-128 hashing speed on one core: what ingest spends per byte to name and check every file.

Pinned to one CPU. Two numbers, each the best of --rounds:
  memory  xxh3_128 over an in-memory buffer, fed in 8 MiB slices (the hash itself);
  file    origin.hashing.hash_file over a file in the page cache (what ingest runs: readinto a
          reused buffer, then hash), so the read copy is included.
Target: >= 2 GB/s (10^9 bytes per second) for both.

    python loadtests/origin_hash.py [--mib 512] [--rounds 5] [--cpu 0]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from origin.hashing import CHUNK_BYTES, hash_file  # noqa: E402


def memory_gbps(buffer: bytes, rounds: int) -> float:
    view = memoryview(buffer)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        digest = xxhash.xxh3_128()
        for i in range(0, len(view), CHUNK_BYTES):
            digest.update(view[i:i + CHUNK_BYTES])
        digest.hexdigest()
        best = min(best, time.perf_counter() - start)
    return len(buffer) / best / 1e9


def file_gbps(path: Path, rounds: int) -> float:
    hash_file(path)  # warm the page cache
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        hash_file(path)
        best = min(best, time.perf_counter() - start)
    return path.stat().st_size / best / 1e9


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cpu", type=int, default=0)
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.cpu})
    buffer = os.urandom(args.mib << 20)
    mem = memory_gbps(buffer, args.rounds)
    with tempfile.NamedTemporaryFile(prefix="origin-hash-") as fh:
        fh.write(buffer)
        fh.flush()
        disk = file_gbps(Path(fh.name), args.rounds)
    ok = "PASS" if min(mem, disk) >= 2.0 else "MISS"
    print(f"xxh3-128 on cpu {args.cpu}, {args.mib} MiB, best of {args.rounds}: "
          f"memory {mem:.2f} GB/s, file (page cache) {disk:.2f} GB/s (target >= 2 GB/s: {ok})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
