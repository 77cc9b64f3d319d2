"""`oca fill -c FILE` (also `python -m oca.fill.cli`): one fill run for the appliance of FILE (its
config: id, disks, index, key file).

Fill settings come from `--fill-config` (default: fill.toml beside the appliance config, if any; see
config/fill.example.toml, every table optional) and the flags below, which override it. The manifest comes from steering (`--steering URL`, repeatable, or
[agent] steering) or a file (`--manifest FILE`). The origin for bare origin sources and the catalog
check: `--origin http://origin:8070` (`origin serve`) or `--origin s3://bucket/prefix` with
`--endpoint-url` for MinIO/Ceph/moto (credentials from the usual AWS environment or profile).

The process lowers its own CPU and I/O priority first (nice, ioprio), so the serving workers win.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import platform
import sys
from pathlib import Path

from msgspec.structs import replace

from contracts.structconf import ConfigError
from oca.fill import config as fill_config
from oca.fill.agent import EXIT_USAGE, RunOptions, run
from oca.fill.log import log
from oca.fill.statedir import AgentBusy
from oca import config as oca_config

_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "armv7l": 314, "ppc64le": 273, "s390x": 282}
_IOPRIO_CLASS = {"best-effort": (2, 7), "idle": (3, 0)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="oca fill", description="one fill run: fetch what the manifest lists")
    p.add_argument("-c", "--config", type=Path, required=True, help="appliance config file (TOML)")
    p.add_argument("--fill-config", type=Path, help="fill settings (TOML, see config/fill.example.toml)")
    p.add_argument("--steering", action="append", default=[], metavar="URL",
                   help="steering replica base URL (repeat for several; tried in order)")
    p.add_argument("--manifest", type=Path, metavar="FILE", help="read the manifest from a file instead")
    p.add_argument("--origin", metavar="URL|s3://BUCKET[/PREFIX]", help="the origin (HTTP or S3)")
    p.add_argument("--endpoint-url", help="S3 API endpoint for an s3:// origin")
    p.add_argument("--region", help="S3 region")
    p.add_argument("--no-verify-catalog", action="store_true", help="do not check the manifest against the catalog")
    p.add_argument("--ignore-window", action="store_true", help="run now even outside the fill window")
    p.add_argument("--max-run-s", type=float, help="stop after this many seconds (also inside the window)")
    p.add_argument("--rate-limit-bps", type=int, help="bandwidth cap in bits/s (0: none)")
    p.add_argument("--max-files", type=int, help="files downloading at once")
    p.add_argument("--parts-per-file", type=int, help="parallel ranged GETs per file")
    p.add_argument("--part-bytes", type=int, help="bytes per ranged GET")
    p.add_argument("--state-dir", type=Path, help="where the agent keeps its state and metrics")
    p.add_argument("--admin-url", help="the appliance's admin base URL (serving load, to yield to it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.add_argument("--no-lowprio", action="store_true", help="keep normal CPU and I/O priority")
    return p


def fill_config_path(args: argparse.Namespace) -> Path | None:
    """--fill-config, else fill.toml beside the appliance config when there is one (so the packaged
    unit's `oca fill -c /etc/oca/oca.toml` picks up /etc/oca/fill.toml)."""
    if args.fill_config is not None:
        return args.fill_config
    beside = Path(args.config).resolve().parent / "fill.toml"
    return beside if beside.is_file() else None


def settings(args: argparse.Namespace) -> fill_config.FillConfig:
    path = fill_config_path(args)
    cfg = fill_config.load(path) if path is not None else fill_config.FillConfig()
    t = cfg.transfer
    for flag, name in (("rate_limit_bps", "rate_limit_bps"), ("max_files", "max_files"),
                       ("parts_per_file", "parts_per_file"), ("part_bytes", "part_bytes")):
        value = getattr(args, flag)
        if value is not None:
            if value < (0 if flag == "rate_limit_bps" else 1):
                raise ConfigError(f"--{flag.replace('_', '-')}: out of range")
            t = replace(t, **{name: value})
    origin = cfg.origin
    if args.origin:
        is_s3 = args.origin.startswith("s3://")
        if not is_s3 and not args.origin.startswith(("http://", "https://")):
            raise ConfigError("--origin: must be an http(s) URL or s3://bucket[/prefix]")
        origin = replace(origin, url=None if is_s3 else args.origin.rstrip("/"),
                         location=args.origin if is_s3 else None)
    if args.endpoint_url:
        if not args.endpoint_url.startswith(("http://", "https://")):
            raise ConfigError("--endpoint-url: must be an http(s) URL")
        origin = replace(origin, endpoint_url=args.endpoint_url.rstrip("/"))
    if args.region:
        origin = replace(origin, region=args.region)
    if args.no_verify_catalog:
        origin = replace(origin, verify_catalog=False)
    agent = cfg.agent
    if args.state_dir:
        agent = replace(agent, state_dir=args.state_dir.resolve())
    if args.steering:
        agent = replace(agent, steering=tuple(u.rstrip("/") for u in args.steering))
    return replace(cfg, transfer=t, origin=origin, agent=agent)


def lower_priority(nice: int, io_class: str) -> None:
    """nice(2) and ioprio_set(2) for this process, only ever lowering what it was started with (a unit
    may already have set the idle class); best effort (a container may forbid it)."""
    try:
        if nice and os.getpriority(os.PRIO_PROCESS, 0) < nice:
            os.nice(nice - os.getpriority(os.PRIO_PROCESS, 0))
    except OSError:
        pass
    number = _IOPRIO_SET.get(platform.machine())
    if io_class == "none" or number is None:
        return
    klass, level = _IOPRIO_CLASS[io_class]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        current = libc.syscall(number + 1 if platform.machine() in ("x86_64", "aarch64") else -1, 1, 0)
        if current >= 0 and (current >> 13) == 3:  # already IOPRIO_CLASS_IDLE: nothing lower
            return
        libc.syscall(number, 1, 0, (klass << 13) | level)  # IOPRIO_WHO_PROCESS, this process
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        oca = oca_config.load(args.config)
        cfg = settings(args)
        if args.manifest is None and not cfg.agent.steering:
            raise ConfigError("--steering URL or --manifest FILE (or [agent] steering in --fill-config) is required")
    except ConfigError as exc:
        print(f"oca fill: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.no_lowprio:
        lower_priority(cfg.serving.nice, cfg.serving.io_class)
    opts = RunOptions(steering=cfg.agent.steering, manifest_file=args.manifest, ignore_window=args.ignore_window,
                      progress=not args.no_progress, max_run_s=args.max_run_s, admin_url=args.admin_url)
    try:
        return asyncio.run(run(oca, cfg, opts))
    except AgentBusy as exc:  # the previous run is still going: it does the work, this one is not needed
        log("busy", error=str(exc))
        return 0
    except ConfigError as exc:
        print(f"oca fill: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
