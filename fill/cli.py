"""`fill`: the control plane's fill planner.

    fill plan -c /etc/opencdn/fill-plan.toml [--dry-run]   one planner run (fill.job): gather, plan, write
    fill check-config -c /etc/opencdn/fill-plan.toml      validate the config, its key and token files

`fill plan` prints one JSON event per line on stdout and ends with the run's summary (`plan-done` or
`plan-failed`). Exit codes: 0 a plan was written (or, with --dry-run, would have been), 1 the run failed
and nothing was written (the manifests in force stay), 2 usage or config error, 3 another run holds the
lock.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from contracts.structconf import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fill", description="the fleet's fill planner")
    sub = p.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="one planner run: gather demand, fleet state and catalog; write manifests")
    plan.add_argument("-c", "--config", type=Path, required=True, help="planner config (TOML)")
    plan.add_argument("--dry-run", action="store_true", help="plan and report, write nothing")
    check = sub.add_parser("check-config", help="validate the config and the files it names")
    check.add_argument("-c", "--config", type=Path, required=True)
    return p


def check_config(path: Path) -> int:
    from fill import config as plan_config
    from fill.gather import read_token
    from fill.job import master_keys

    cfg = plan_config.load(path)
    keys = master_keys(cfg.planner.key_file)
    for name, replicas in (("steering", cfg.steering), ("playback", cfg.playback)):
        try:
            if replicas.urls and read_token(replicas.token_file) is None:
                print(f"warning: {name}.token_file: none: replicas will answer 401", file=sys.stderr)
        except OSError as exc:
            raise ConfigError(f"{name}.token_file: {exc}") from None
    print(f"{path}: ok — {len(cfg.steering.urls)} steering and {len(cfg.playback.urls)} playback replica(s), "
          f"catalog {cfg.origin.location}, manifests to {cfg.manifests.location}, master keys "
          f"{', '.join(sorted(keys.keys))}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return check_config(args.config)
        from fill import config as plan_config
        from fill.job import Planner

        return Planner(plan_config.load(args.config)).plan(dry_run=args.dry_run)
    except ConfigError as exc:
        print(f"fill {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
