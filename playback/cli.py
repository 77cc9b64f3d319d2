"""`playback serve -c FILE` and `playback check-config -c FILE`."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Sequence

from contracts.logs import log_event, setup_logging
from contracts.tlsserve import ServerTls, describe
from contracts.structconf import ConfigError
from playback import config as playback_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="playback", description="CDN playback backend")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the playback HTTP service")
    serve.add_argument("-c", "--config", type=Path, required=True)
    serve.add_argument("--log-level", default="info")
    check = sub.add_parser("check-config", help="validate the config and open the origin's catalog")
    check.add_argument("-c", "--config", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    return run(args.config, args.log_level)


def check_config(path: Path) -> int:
    try:
        config = playback_config.load(path)
        listener = describe(config.tls) if config.tls is not None else "plain HTTP (no [tls])"
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {path}")
    print(f"  listener: {config.listen}:{config.port}, {listener}")
    print(f"  origin: {config.origin}")
    print(f"  steering: {', '.join(config.steering_urls)}")
    if not config.steering_token:
        print("warning: playback.steering_token_file: not set — steering answers no anonymous caller, so every "
              "play would get a 503 (steering callers add playback --roles steer,fleet)", file=sys.stderr)
    print(f"  trusted proxies: {', '.join(config.trusted_proxies) or 'none (the connection is the client)'}")
    return 0


def run(path: Path, log_level: str) -> int:
    """Serve; every line on stdout is one JSON log event (the bound port is in `listening`)."""
    setup_logging("playback", log_level)
    try:
        config = playback_config.load(path)
        tls = ServerTls(config.tls) if config.tls is not None else None
    except ConfigError as exc:
        log_event(logging.getLogger("playback"), "config-error", logging.ERROR, error=str(exc))
        return 2
    from playback.server import serve

    main_task = serve(config, tls)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main_task)
    else:
        uvloop.run(main_task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
