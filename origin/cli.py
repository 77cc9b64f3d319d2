"""`origin`: ingest titles, make a sample, serve the local origin, read the catalog, check config.

Every command names its origin the same way: `--origin PATH` (a local directory), `--origin
s3://bucket/prefix` (with `--endpoint-url` for MinIO, Ceph RGW, moto), or `[origin] location` in the
config file given with `-c`. JSON goes to stdout, progress and notes to stderr, except for the
daemon, `origin serve`, whose every line on stdout is one JSON log event (contracts.logs). Exit codes:
0 done, 1 a runtime failure (storage, ffmpeg), 2 bad input (usage, config, a corrupt or unsupported source).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from contracts import catalog as catalog_schema
from contracts.catalog import CatalogError, Metadata
from contracts.keys import load_keyring
from contracts.logs import log_event, setup_logging
from contracts.token import fill_keys, fill_token
from contracts.structconf import ConfigError
from origin import config as config_mod
from origin.backends import Backend, open_backend
from origin.catalog import Catalog
from origin.config import OriginConfig
from origin.core import layout
from origin.core.errors import OriginError, UsageError
from origin.progress import Reporter


def _add_origin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, help="origin config file (TOML)")
    p.add_argument("--origin", help="local directory or s3://bucket/prefix (overrides the config)")
    p.add_argument("--endpoint-url", help="S3 API endpoint for a non-AWS S3 (MinIO, Ceph RGW)")
    p.add_argument("--region", help="S3 region")


def _split(values: list[str] | None) -> tuple[str, ...]:
    """`--genres a,b --genres c` → (a, b, c)."""
    return tuple(v.strip() for value in values or () for v in value.split(",") if v.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="origin", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="encode a source into an ABR ladder, upload it, write its catalog entry")
    _add_origin_args(p)
    p.add_argument("source", nargs="?", type=Path, help="the source video (omit with --encoded)")
    p.add_argument("--encoded", type=Path, metavar="DIR", help="ingest a ladder encoded elsewhere (fMP4 files)")
    p.add_argument("--title-id", required=True)
    p.add_argument("--title", required=True)
    p.add_argument("--genres", action="append", help="comma-separated; may repeat")
    p.add_argument("--languages", action="append", help="audio languages in stream order (BCP 47)")
    p.add_argument("--release-date", help="YYYY-MM-DD")
    p.add_argument("--force", action="store_true", help="encode again even if the catalog has this source")
    p.add_argument("--keep-work", action="store_true", help="keep the encoded files in the work directory")
    p.add_argument("--work-dir", type=Path, help="where encodes are made (default: encode.work_dir or $TMPDIR)")

    p = sub.add_parser("sample", help="make a short sample title (test pattern and tone)")
    p.add_argument("outdir", type=Path)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--ffmpeg", default="ffmpeg")

    p = sub.add_parser("serve", help="the embedded HTTP origin over a local directory")
    _add_origin_args(p)
    p.add_argument("--listen")
    p.add_argument("--port", type=int)

    p = sub.add_parser("titles", help="list titles as JSON (optionally searched)")
    _add_origin_args(p)
    p.add_argument("-q", "--query", help="search titles")
    p.add_argument("--genre")

    p = sub.add_parser("show", help="print one title's catalog entry as JSON")
    _add_origin_args(p)
    p.add_argument("title_id")

    p = sub.add_parser("check-config", help="validate a config file and print what it means")
    _add_origin_args(p)

    p = sub.add_parser("gc", help="remove old versions no catalog entry and no fill manifest references")
    _add_origin_args(p)
    p.add_argument("--referenced", type=Path, action="append",
                   help="file keys fill manifests still list: a JSON list, or one key per line")
    p.add_argument("--title", help="only this title's files")
    p.add_argument("--apply", action="store_true", help="delete (default: only print the plan)")

    p = sub.add_parser("token", help="print a fill token (query string) for curl or ffmpeg")
    p.add_argument("--key-file", type=Path, required=True, help="the origin's own key file")
    p.add_argument("--holder", default="operator", help="who the token is for (logged by the origin)")
    p.add_argument("--ttl-s", type=int, default=3600)
    return parser


def load_config(args: argparse.Namespace, need_location: bool = True) -> OriginConfig:
    cfg = config_mod.load(args.config) if getattr(args, "config", None) else OriginConfig()
    if getattr(args, "origin", None):
        cfg = cfg.with_location(config_mod.parse_location(args.origin, args.endpoint_url, args.region))
    elif getattr(args, "endpoint_url", None):
        raise UsageError("--endpoint-url goes with --origin s3://bucket/prefix")
    if need_location and cfg.location is None:
        raise UsageError("no origin: pass --origin PATH or --origin s3://bucket/prefix, or -c FILE with [origin]")
    return cfg


def _backend(cfg: OriginConfig) -> Backend:
    assert cfg.location is not None
    return open_backend(cfg.location, cfg.s3)


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def cmd_ingest(args: argparse.Namespace) -> int:
    from msgspec.structs import replace

    from origin.ingest import IngestRequest, ingest

    cfg = load_config(args)
    encode_cfg = replace(cfg.encode, work_dir=args.work_dir) if args.work_dir else cfg.encode
    meta = Metadata(args.title_id, args.title, _split(args.genres), _split(args.languages), args.release_date)
    reporter = Reporter()
    request = IngestRequest(meta, source=args.source, encoded_dir=args.encoded, keep_work=args.keep_work,
                            force=args.force)
    result = ingest(request, _backend(cfg), encode_cfg, reporter)
    state = "already up to date" if result.up_to_date and not result.uploaded else "ingested"
    reporter.note(f"{state}: {result.entry.title_id} {result.entry.version}: {result.uploaded} object(s) "
                  f"uploaded ({result.bytes_uploaded / 2**20:.1f} MiB), {result.skipped} already in place")
    _print_json(catalog_schema.summary(result.entry))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from origin.encode import sample

    try:
        width, height = (int(x) for x in args.size.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {args.size!r}: expected WIDTHxHEIGHT") from None
    if not (0 < args.seconds <= 3600) or width < 16 or height < 16 or width % 2 or height % 2:
        raise UsageError("--seconds in (0, 3600], --size even and at least 16x16")
    out = sample(args.ffmpeg, args.outdir / "sample.mp4", args.seconds, width, height, args.fps)
    print(out)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The daemon: every line on stdout is one JSON log event, errors included (the bound port is in
    `listening`). SIGHUP reads the config again with the same command-line overrides."""
    from origin.server import serve

    setup_logging("origin")
    try:
        cfg = _serve_config(args)
        serve(cfg, read_config=lambda: _serve_config(args))
    except (ConfigError, OriginError, CatalogError) as exc:
        log_event(logging.getLogger("origin"), "config-error", logging.ERROR, error=str(exc))
        return 2 if isinstance(exc, ConfigError) else exc.exit_code
    return 0


def _serve_config(args: argparse.Namespace) -> OriginConfig:
    from msgspec.structs import replace

    cfg = load_config(args)
    overrides = {k: v for k, v in (("listen", args.listen), ("port", args.port)) if v is not None}
    return replace(cfg, serve=replace(cfg.serve, **overrides))


def cmd_titles(args: argparse.Namespace) -> int:
    entries = Catalog(_backend(load_config(args))).search(args.query, args.genre)
    _print_json([catalog_schema.summary(e) for e in entries])
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _print_json(catalog_schema.to_dict(Catalog(_backend(load_config(args))).get(args.title_id)))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    if not args.config:
        raise UsageError("check-config needs -c FILE")
    cfg = load_config(args, need_location=False)
    if cfg.serve.key_file is not None:
        load_keyring(cfg.serve.key_file)
    from contracts.tlsserve import describe

    listener = describe(cfg.tls) if cfg.tls is not None else "plain HTTP (no [tls])"
    print(f"{args.config}: ok; origin {cfg.location or '(none: pass --origin)'}; "
          f"{len(cfg.encode.ladder)} ladder rungs; serve on {cfg.serve.listen}:{cfg.serve.port}, {listener}")
    return 0


def _referenced(paths: list[Path] | None) -> set[str]:
    keys: set[str] = set()
    for path in paths or ():
        text = path.read_text()
        try:
            value = json.loads(text)
            keys.update(str(k) for k in value)
        except json.JSONDecodeError:
            keys.update(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return keys


def cmd_gc(args: argparse.Namespace) -> int:
    backend = _backend(load_config(args))
    current = {key for entry in Catalog(backend).list() for key, _, _ in entry.objects()}
    prefix = layout.title_prefix(args.title) if args.title else layout.FILES_PREFIX
    objects = [info.key for info in backend.list(prefix)]
    plan = layout.plan_gc(objects, current, _referenced(args.referenced))
    if args.apply:
        for key in plan.delete:
            backend.delete(key)
    _print_json({"delete": list(plan.delete), "keptReferenced": list(plan.kept_referenced), "applied": args.apply})
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    print(fill_token(fill_keys(load_keyring(args.key_file), args.holder), int(time.time()) + args.ttl_s, args.holder))
    return 0


COMMANDS = {"ingest": cmd_ingest, "sample": cmd_sample, "serve": cmd_serve, "titles": cmd_titles,
            "show": cmd_show, "check-config": cmd_check_config, "gc": cmd_gc, "token": cmd_token}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="origin: %(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"origin: config error: {exc}", file=sys.stderr)
        return 2
    except (OriginError, CatalogError) as exc:
        print(f"origin: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("origin: interrupted (run the same command again to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
