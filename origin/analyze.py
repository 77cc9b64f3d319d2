"""Reading a rendition file for origin.core.mp4: walk the top-level boxes by their headers, read the
payloads of the few small boxes the analysis needs (never mdat), hand them to the core."""
from __future__ import annotations

import os
from pathlib import Path

from origin.core.errors import MediaError
from origin.core.mp4 import HEADER_BYTES, MAX_PAYLOAD_BYTES, NEEDS_PAYLOAD, Layout, TopBox, analyze, parse_header


def read_boxes(path: Path) -> list[TopBox]:
    size = os.path.getsize(path)
    boxes, offset = [], 0
    with open(path, "rb") as fh:
        while offset < size:
            fh.seek(offset)
            box_type, box_size, header = parse_header(fh.read(HEADER_BYTES), offset, size)
            payload = None
            if box_type in NEEDS_PAYLOAD:
                if box_size - header > MAX_PAYLOAD_BYTES:
                    raise MediaError(f"{box_type} box at byte {offset} is {box_size} bytes: too large")
                fh.seek(offset + header)
                payload = fh.read(box_size - header)
            boxes.append(TopBox(box_type, offset, box_size, payload))
            offset += box_size
    return boxes


def layout_of(path: Path) -> Layout:
    try:
        return analyze(read_boxes(path), os.path.getsize(path))
    except MediaError as exc:
        raise MediaError(f"{path.name}: {exc}") from None
