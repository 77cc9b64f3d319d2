"""`oca`: the appliance's command line. Every command takes `-c FILE` (the appliance config) or
`--dev DIR` (a one-disk appliance over DIR, state in DIR/.oca, made on first use)."""
from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import time
from pathlib import Path

from contracts.ids import InvalidFileKey, validate_file_key
from contracts.keys import load_keyring
from contracts.token import client_prefix_for, sign_path
from contracts.tomlconf import ConfigError
from oca import config as oca_config
from oca.config import OcaConfig, Tier


def _add_source(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("-c", "--config", type=Path, help="appliance config file (TOML)")
    group.add_argument("--dev", type=Path, metavar="DIR", help="one-disk dev appliance over DIR")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oca", description="Open Connect-style appliance")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve files (supervisor + workers)")
    _add_source(p)
    p.add_argument("--port", type=int, help="dev mode: data port (default 8080)")
    p.add_argument("--admin-port", type=int, default=None, help="dev mode: admin port (default: any free)")
    p.add_argument("--workers", type=int, help="serving processes (default: config, or 1 in dev mode)")
    p.add_argument("--no-sendfile", action="store_true", help="copy through user space instead of sendfile")
    p.add_argument("--no-access-log", action="store_true", help="do not log each response")
    p = sub.add_parser("check-config", help="validate a config file and its key file")
    p.add_argument("-c", "--config", type=Path, required=True)
    p = sub.add_parser("put", help="pre-position a local file under a key")
    _add_source(p)
    p.add_argument("path", type=Path)
    p.add_argument("--key", required=True)
    p.add_argument("--tier", choices=[t.value for t in Tier])
    p = sub.add_parser("url", help="print a signed URL for a key")
    _add_source(p)
    p.add_argument("key")
    p.add_argument("--client", help="bind the URL to this client's prefix")
    p.add_argument("--ttl", type=int, help="seconds the URL stays valid")
    p.add_argument("--base", help="base URL of the appliance (default: from the config)")
    p = sub.add_parser("ls", help="list indexed files")
    _add_source(p)
    p.add_argument("--json", action="store_true")
    sub.add_parser("fill", help="one fill run (see `oca fill --help`)", add_help=False)
    p = sub.add_parser("disks", help="check every disk and show its state")
    _add_source(p)
    p = sub.add_parser("bgp", help="BGP sessions (like `birdc show protocols`), or the routes held")
    _add_source(p)
    p.add_argument("what", nargs="?", choices=["protocols", "routes"], default="protocols")
    p.add_argument("--admin", help="the running appliance's admin URL (default: from the config)")
    p.add_argument("--json", action="store_true")
    return parser


def _dev_state(directory: Path) -> dict:
    try:
        return json.loads((directory / ".oca" / "dev.json").read_text())
    except (OSError, ValueError):
        return {}


def _config(args: argparse.Namespace) -> OcaConfig:
    if args.config is not None:
        return oca_config.load(args.config)
    directory = args.dev
    if not directory.is_dir():
        raise ConfigError(f"--dev {directory}: not a directory")
    state = _dev_state(directory)
    port = getattr(args, "port", None)
    admin_port = getattr(args, "admin_port", None)
    return oca_config.dev_config(directory, port=state.get("port", 8080) if port is None else port,
                                 workers=getattr(args, "workers", None) or 1,
                                 sendfile=not getattr(args, "no_sendfile", False),
                                 admin_port=0 if admin_port is None else admin_port)


def cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from oca.daemon import serve

    config = _config(args)
    http = config.http
    if args.workers:
        http = replace(http, workers=args.workers)
    if args.no_sendfile:
        http = replace(http, sendfile=False)
    if args.no_access_log:
        http = replace(http, access_log=False)
    if args.dev is not None and args.port is None:
        http = replace(http, port=8080)
    serve(replace(config, http=http))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = oca_config.load(args.config)
    keys = load_keyring(config.tokens.key_file)
    for disk in config.disks:
        if not disk.path.is_dir():
            print(f"warning: tiers.{disk.tier.value}: {disk.path} is not a directory (yet)", file=sys.stderr)
    _warn_descriptor_budget(config)
    print(f"{args.config}: ok — appliance {config.appliance_id}, {len(config.disks)} disk(s), "
          f"{len(keys.keys)} key(s), signing key {keys.signing_id}")
    return 0


def _warn_descriptor_budget(config: OcaConfig) -> None:
    """Each worker (its own process) holds a descriptor per connection plus its cached open files;
    running out sheds connections with 503s long before the CPU is busy."""
    import resource

    from oca.http.files import DEFAULT_OPEN_FILES

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    need = config.http.max_connections + DEFAULT_OPEN_FILES + 64
    if hard != resource.RLIM_INFINITY and hard < need:
        print(f"warning: http.max_connections: {config.http.max_connections} connections per worker need about "
              f"{need} descriptors, but the limit is {hard} (raise LimitNOFILE, or lower max_connections)",
              file=sys.stderr)


def cmd_put(args: argparse.Namespace) -> int:
    from oca.daemon import prepare_dev
    from oca.store.store import Store

    config = _config(args)
    if config.dev:
        prepare_dev(config)
    key = validate_file_key(args.key)
    store = Store.open(config)
    try:
        entry = store.put_file(args.path, key, Tier(args.tier) if args.tier else None)
    finally:
        store.close()
    print(json.dumps({"key": entry.key, "tier": entry.tier.value, "disk": entry.disk, "size": entry.size,
                      "xxh3": entry.xxh3}))
    return 0


def cmd_url(args: argparse.Namespace) -> int:
    from oca.daemon import prepare_dev

    config = _config(args)
    if config.dev:
        prepare_dev(config)
    key = validate_file_key(args.key)
    keys = load_keyring(config.tokens.key_file)
    ttl = args.ttl or config.tokens.default_ttl_s
    prefix = None
    if args.client:
        try:
            prefix = client_prefix_for(args.client, config.tokens.client_prefix_v4, config.tokens.client_prefix_v6)
        except ValueError:
            raise ConfigError(f"--client {args.client!r}: not an IP address") from None
    base = args.base or _base_url(config)
    print(base.rstrip("/") + sign_path("/" + key, keys, int(time.time()) + ttl, prefix))
    return 0


def _base_url(config: OcaConfig) -> str:
    host = config.http.listen
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name: used as it is
    return f"http://{host}:{config.http.port}"


def cmd_ls(args: argparse.Namespace) -> int:
    from oca.store.index import Index

    config = _config(args)
    index = Index.open(config.store.index_path, readonly=True)
    try:
        entries = sorted(index.all(), key=lambda e: e.key)
    finally:
        index.close()
    for e in entries:
        if args.json:
            print(json.dumps({"key": e.key, "tier": e.tier.value, "disk": e.disk, "size": e.size,
                              "xxh3": e.xxh3, "pinned": e.pinned}))
        else:
            print(f"{e.tier.value:3}  {e.size:>14,}  {e.xxh3}  {e.key}")
    return 0


def cmd_disks(args: argparse.Namespace) -> int:
    from oca.daemon import disk_json
    from oca.store.store import Store

    store = Store.open(_config(args))
    try:
        for health in store.check_disks():
            print(json.dumps(disk_json(health)))
    finally:
        store.close()
    return 0


def cmd_bgp(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    from oca.bgp import show

    if args.admin:
        base = args.admin.rstrip("/")
    else:
        config = _config(args)
        host = config.admin.listen if config.admin.listen not in ("0.0.0.0", "::", "") else "127.0.0.1"
        base = f"http://{'[' + host + ']' if ':' in host else host}:{config.admin.port}"
    url = base + "/v1/bgp" + ("?routes=1" if args.what == "routes" else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("detail", exc.reason)
        raise ConfigError(f"{url}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"{url}: is the appliance running? ({exc})") from None
    print(json.dumps(body, indent=1) if args.json else show.protocols(body) if args.what == "protocols"
          else show.routes(body))
    return 0


COMMANDS = {"bgp": cmd_bgp, "serve": cmd_serve, "check-config": cmd_check_config, "put": cmd_put, "url": cmd_url,
            "ls": cmd_ls, "disks": cmd_disks}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["fill"]:  # the fill agent has its own options (see oca/fill/cli.py)
        from oca.fill.cli import main as fill_main

        return fill_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, InvalidFileKey) as exc:
        print(f"oca {args.command}: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"oca {args.command}: {exc.filename}: no such file", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
