"""Provisioning: `steering keys derive` (an appliance's or the origin's own keys) and `steering callers
add` (a bearer token for a service such as playback).

Steering holds the fleet's master key file; nothing else should. Each appliance gets a key file of
its own, derived from the master for its id (contracts.keys), which verifies the URLs steering signs
for it and signs its heartbeats. `--pull-from PARENT` writes instead the fill keys an appliance
uses to pull through from PARENT (valid at PARENT, for this appliance only). Rotation: add a key to
the master file, derive again for every holder, install, then switch `signing`.

`steering callers add NAME --roles steer,fleet -c steering.toml` appends `[callers.NAME]` with the
SHA-256 of a fresh token to the callers file steering's config names, and prints the token once on
stdout: give it to the caller (playback's `steering_token_file`). Steering re-reads the file itself.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path

from contracts.callers import ROLES, new_token, parse_callers
from contracts.keys import derive_keyring, keyfile_text, load_keyring
from contracts.structconf import ConfigError
from contracts.token import fill_keys


def add_parser(sub: "argparse._SubParsersAction") -> None:
    keys = sub.add_parser("keys", help="provision key files derived from the master keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    derive = ksub.add_parser("derive", help="write the key file one appliance (or the origin) holds")
    src = derive.add_mutually_exclusive_group(required=True)
    src.add_argument("-c", "--config", type=Path, help="steering's config (its key_file is the master)")
    src.add_argument("--master", type=Path, help="the master key file itself")
    derive.add_argument("--appliance", required=True, help="appliance id as in the fleet file, or 'origin'")
    derive.add_argument("--pull-from", metavar="PARENT", help="write APPLIANCE's fill keys for pulling from PARENT")
    derive.add_argument("-o", "--output", type=Path, help="file to write (mode 0600); default: stdout")


def add_callers_parser(sub: "argparse._SubParsersAction") -> None:
    callers = sub.add_parser("callers", help="who may call steering: bearer tokens for services")
    csub = callers.add_subparsers(dest="callers_command", required=True)
    add = csub.add_parser("add", help="add a caller; prints its token once")
    add.add_argument("name")
    add.add_argument("--roles", required=True, help=f"comma-separated: {', '.join(sorted(ROLES))}")
    add.add_argument("-c", "--config", type=Path, required=True, help="steering's config (names callers_file)")


def run_callers(args: argparse.Namespace) -> int:
    from steering import config as steering_config
    from steering.service import load_callers

    try:
        config = steering_config.load(args.config)
        if config.callers_file is None:
            raise ConfigError("steering.callers_file: not set; name the file the callers are kept in")
        roles = [r.strip() for r in args.roles.split(",") if r.strip()]
        token, digest = new_token()
        entry = f'\n[callers.{args.name}]\ntoken_sha256 = "{digest}"\nroles = {json.dumps(roles)}\n'
        before = config.callers_file.read_text() if config.callers_file.exists() else ""
        parse_callers(tomllib.loads(before + entry))  # refuse a bad name, role or duplicate before writing
        fd = os.open(config.callers_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(entry)
        load_callers(config.callers_file)
    except (ConfigError, ValueError, tomllib.TOMLDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    print(f"added caller {args.name} ({', '.join(roles)}) to {config.callers_file}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        master = load_keyring(_master_path(args))
        holder = args.appliance
        if args.pull_from:
            ring, label = fill_keys(derive_keyring(master, args.pull_from), holder), f"fill:{holder}@{args.pull_from}"
        else:
            ring, label = derive_keyring(master, holder), holder
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = keyfile_text(ring, label)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    print(f"wrote {args.output}: keys {', '.join(sorted(ring.keys))} derived for {label}", file=sys.stderr)
    return 0


def _master_path(args: argparse.Namespace) -> Path:
    if args.master is not None:
        return args.master
    from steering import config as steering_config

    return steering_config.load(args.config).key_file
