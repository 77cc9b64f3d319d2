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
from contracts.token import Keyring, client_prefix_for, sign_path
from contracts.jsoncall import CallFailed, call_json
from contracts.structconf import ConfigError
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
    p.add_argument("--tls-cert", type=Path, help="dev mode: serve HTTPS too, with this chain file (leaf first)")
    p.add_argument("--tls-key", type=Path, help="dev mode: the key of --tls-cert")
    p.add_argument("--tls-port", type=int, default=8443, help="dev mode: HTTPS port (default 8443; 0: any)")
    p = sub.add_parser("check-config", help="validate a config file, its key files, disks and fill settings")
    p.add_argument("-c", "--config", type=Path, required=True)
    p.add_argument("--fill-config", type=Path,
                   help="the fill settings to check too (default: fill.toml beside the config, if there is one)")
    p.add_argument("--allow-missing-disks", action="store_true",
                   help="a disk directory that is not there (yet) is a warning, not an error")
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
    p.add_argument("--scheme", choices=["http", "https"],
                   help="which listener's URL when both are on (default: https when [tls] is on, else http)")
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
    p = sub.add_parser("drain", help="drain for maintenance: no new plays, URLs handed out keep working; "
                                     "durable across restarts until `oca undrain`")
    _add_source(p)
    p.add_argument("--reason", default="", help="why (shown on the fleet page; at most 200 characters)")
    p.add_argument("--admin", help="the running appliance's admin URL (default: from the config)")
    p = sub.add_parser("undrain", help="end a maintenance drain: steering offers the appliance again")
    _add_source(p)
    p.add_argument("--admin", help="the running appliance's admin URL (default: from the config)")
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
    from msgspec.structs import replace

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
    if args.tls_cert is not None:  # dev mode's [tls]: one certificate, beside the plain port
        from oca.tlsconf import CertificateConfig, TlsConfig

        if args.tls_key is None:
            raise ConfigError("--tls-cert needs --tls-key")
        config = replace(config, tls=TlsConfig(
            certificates=(CertificateConfig(cert=args.tls_cert.resolve(), key=args.tls_key.resolve()),),
            listen=http.listen, port=args.tls_port, handshake_timeout_s=http.header_timeout_s))
    serve(replace(config, http=http))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Everything `oca serve` and `oca fill` would refuse at start: the config, the key files the
    workers load (tokens, and pull-through's when on), the disks, the fill settings. 0 ok, 2 not."""
    from oca.fill import config as fill_config
    from oca.fill.cli import fill_config_path

    config = oca_config.load(args.config)
    keys = _keyring(config.tokens.key_file, "tokens.key_file")
    if config.pull_through.enabled and config.pull_through.key_file is not None:
        _keyring(config.pull_through.key_file, "pull_through.key_file")
    missing = [d for d in config.disks if not d.path.is_dir()]
    for disk in missing:
        level = "warning" if args.allow_missing_disks else "error"
        print(f"{level}: tiers.{disk.tier.value}: {disk.path} is not a directory", file=sys.stderr)
    if missing and not args.allow_missing_disks:
        print("(mount the disks first, or pass --allow-missing-disks to check the rest)", file=sys.stderr)
        return 2
    fill_path = fill_config_path(args)
    if fill_path is not None:
        fill_config.load(fill_path)
    _warn_descriptor_budget(config)
    if config.tls is not None:  # the files the workers load at start: readable, matching, not expired
        from oca.tlsconf import check_certificates

        for line in check_certificates(config.tls):
            print(line, file=sys.stderr)
    print(f"{args.config}: ok — appliance {config.appliance_id}, {len(config.disks)} disk(s)"
          + (f" ({len(missing)} missing)" if missing else "") + f", {len(keys.keys)} key(s), signing key "
          f"{keys.signing_id}"
          + (f"; tls: {len(config.tls.certificates)} certificate(s) on port {config.tls.port}" if config.tls else "")
          + f"; fill settings: {fill_path or 'defaults (no fill.toml beside it)'}")
    return 0


def _keyring(path: Path, where: str) -> Keyring:
    try:
        return load_keyring(path)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


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
        config = _with_dev_tls(config, _dev_state(args.dev))
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
        config = _with_dev_tls(config, _dev_state(args.dev))
    key = validate_file_key(args.key)
    keys = load_keyring(config.tokens.key_file)
    ttl = args.ttl or config.tokens.default_ttl_s
    prefix = None
    if args.client:
        try:
            prefix = client_prefix_for(args.client, config.tokens.client_prefix_v4, config.tokens.client_prefix_v6)
        except ValueError:
            raise ConfigError(f"--client {args.client!r}: not an IP address") from None
    base = args.base or _base_url(config, args.scheme)
    print(base.rstrip("/") + sign_path("/" + key, keys, int(time.time()) + ttl, prefix))
    return 0


def _with_dev_tls(config: OcaConfig, state: dict) -> OcaConfig:
    """A dev appliance started with --tls-cert says its TLS port and certificate in dev.json."""
    if not (state.get("tls_port") and state.get("tls_cert") and state.get("tls_key")):
        return config  # none (or a dev.json from an older oca): plain http, or --base
    from msgspec.structs import replace

    from oca.tlsconf import CertificateConfig, TlsConfig

    cert = CertificateConfig(cert=Path(state["tls_cert"]), key=Path(state["tls_key"]))
    return replace(config, tls=TlsConfig(certificates=(cert,), listen=config.http.listen, port=int(state["tls_port"])))


def _base_url(config: OcaConfig, scheme: str | None = None) -> str:
    """The appliance's own base URL: https (the TLS port; the name of the default certificate — the
    one marked `default`, else the first — or the address) when [tls] is on, else http; `scheme`
    picks one when both listeners are on."""
    tls = config.tls
    if scheme is None:
        scheme = "https" if tls is not None else "http"
    if scheme == "http":
        if tls is not None and not tls.plain_port:
            raise ConfigError("--scheme http: this appliance serves HTTPS only (tls.plain_port = false)")
        return f"http://{_host(config.http.listen)}:{config.http.port}"
    if tls is None:
        raise ConfigError("--scheme https: no [tls] in the config (nor a running dev appliance started with "
                          "--tls-cert)")
    from oca.tlsconf import certificate_facts

    i = next((i for i, c in enumerate(tls.certificates) if c.default), 0)  # the default certificate's name
    names = [n for n in certificate_facts(tls.certificates[i], f"tls.certificates[{i}]").names
             if not n.startswith("*.")]
    host = names[0] if names else _host(tls.listen)
    return f"https://{host}:{tls.port}"


def _host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name: used as it is
    return host


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


def _admin_base(args: argparse.Namespace, config: OcaConfig | None = None) -> str:
    if args.admin:
        return args.admin.rstrip("/")
    config = config or _config(args)
    host = config.admin.listen if config.admin.listen not in ("0.0.0.0", "::", "") else "127.0.0.1"
    port = config.admin.port
    if getattr(args, "dev", None) is not None:  # a dev appliance picks its admin port: it says which in dev.json
        port = _dev_state(args.dev).get("admin_port", port)
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def _admin_call(url: str, body: dict | None = None, token: str | None = None) -> dict:
    """GET (or POST `body` as JSON) on the running appliance's admin port; ConfigError with its detail."""
    try:
        return call_json(url, body, token, timeout_s=10)
    except CallFailed as exc:
        raise ConfigError(f"{exc} (is the appliance running?)") from None


def cmd_bgp(args: argparse.Namespace) -> int:
    from oca.bgp import show

    url = _admin_base(args) + "/v1/bgp" + ("?routes=1" if args.what == "routes" else "")
    body = _admin_call(url)
    print(json.dumps(body, indent=1) if args.json else show.protocols(body) if args.what == "protocols"
          else show.routes(body))
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    """`oca drain` / `oca undrain`: POST to the admin API with the admin token from the state directory."""
    from oca.drain import TOKEN_FILE, read_token

    config = _config(args)
    token_path = config.store.index_path.parent / TOKEN_FILE
    try:
        token = read_token(token_path)
    except OSError as exc:
        raise ConfigError(f"{token_path}: {exc.strerror or exc} (run as root or the appliance's user; the "
                          "appliance writes it at start)") from None
    if args.command == "drain":
        body = _admin_call(_admin_base(args, config) + "/v1/drain", {"reason": args.reason}, token)
    else:
        body = _admin_call(_admin_base(args, config) + "/v1/undrain", {}, token)
    print(json.dumps(body))
    return 0


COMMANDS = {"bgp": cmd_bgp, "drain": cmd_drain, "undrain": cmd_drain, "serve": cmd_serve, "check-config": cmd_check_config, "put": cmd_put, "url": cmd_url,
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
