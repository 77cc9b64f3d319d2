"""`steering withdraw TITLE[/VERSION] --reason TEXT` (and `--undo`), `steering withdrawals`: the
content team's commands, talking to a steering replica's API with a bearer token that has the role
`withdraw` (`steering callers add content-team --roles withdraw,fleet`). The replica records the event
in the control store under the token's caller name (who), with the time and the reason; every replica
refuses the files within one poll (steering.withdrawals).

    steering withdraw bad-title/v0123456789abcdef --reason "broken audio (CONTENT-12)" \\
        --url http://steering-1:8100 --token-file /etc/opencdn/content-team.token
    steering withdraw bad-title --undo --reason "re-encoded" --url … --token-file …
    steering withdrawals --url … --token-file … [--json]

Exit codes: 0 done, 1 refused (the detail on stderr: not withdrawn, unknown token, …), 2 usage.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from contracts.withdrawals import WithdrawalError, parse_target
from contracts.jsoncall import CallFailed, call_json


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("withdraw", help="withdraw a title (or one version) fleet-wide, or undo it")
    p.add_argument("target", metavar="TITLE[/VERSION]")
    p.add_argument("--reason", required=True, help="why (kept in the audit list)")
    p.add_argument("--undo", action="store_true", help="put a withdrawn title or version back")
    _connection(p)
    p = sub.add_parser("withdrawals", help="what is withdrawn now, and the audit list")
    p.add_argument("--json", action="store_true")
    _connection(p)


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="a steering replica, e.g. http://steering-1:8100")
    p.add_argument("--token-file", type=Path, required=True, help="a bearer token with the role withdraw")


def run(args: argparse.Namespace) -> int:
    try:
        token = args.token_file.read_text().strip()
    except OSError as exc:
        print(f"steering {args.command}: {args.token_file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    url = args.url.rstrip("/") + "/v1/withdrawals"
    try:
        if args.command == "withdraw":
            title, version = parse_target(args.target)
            body = _call(url, token, {"action": "undo" if args.undo else "withdraw", "title": title,
                                      "version": version, "reason": args.reason})
            e = body["event"]
            print(f"{e['action']}: {_target(e)} by {e['by']} at {_when(e['at'])}: {e['reason']}")
            return 0
        body = _call(url, token)
    except WithdrawalError as exc:
        print(f"steering {args.command}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"steering {args.command}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=1))
        return 0
    print(f"withdrawn now ({len(body['withdrawn'])}):")
    for e in body["withdrawn"]:
        print(f"  {_target(e)}  since {_when(e['at'])} by {e['by']}: {e['reason']}")
    print(f"audit ({len(body['audit'])} events):")
    for e in body["audit"]:
        print(f"  {_when(e['at'])}  {e['action']:8} {_target(e)}  by {e['by']}: {e['reason']}")
    return 0


def _call(url: str, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        return call_json(url, body, token)
    except CallFailed as exc:
        raise RuntimeError(str(exc)) from None


def _target(e: dict[str, Any]) -> str:
    return e["title"] if e.get("version") is None else f"{e['title']}/{e['version']}"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
