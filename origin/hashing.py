"""xxh3-128 of files: read with one reused buffer (no per-chunk allocation), hash at memory speed."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import xxhash

CHUNK_BYTES = 8 << 20


def hash_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    digest = xxhash.xxh3_128()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while True:
            n = fh.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
            if progress is not None:
                progress(n)
    return digest.hexdigest()


def hash_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)
