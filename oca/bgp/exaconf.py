"""ExaBGP's configuration and environment for `[bgp]` (pure: text in, text out).

ExaBGP runs receive-only: no route is configured to announce, and its API process gets every
received UPDATE, End-of-RIB, NOTIFICATION and session change as JSON. That process is oca.bgp.relay,
which copies ExaBGP's messages unchanged into a FIFO the supervisor reads (oca.bgp.speaker): ExaBGP
starts API processes with their own pipes and closes every other descriptor, so a named pipe is the
one channel that reaches the supervisor without sharing ExaBGP's log streams.
"""
from __future__ import annotations

import getpass
import sys
from pathlib import Path

from oca.bgp.config import BgpConfig, PeerConfig


RELAY = Path(__file__).with_name("relay.py")


def render(cfg: BgpConfig, fifo: Path, python: str = sys.executable) -> str:
    """The exabgp.conf text: one API process, one neighbor block per peer."""
    lines = ["process oca-feed {", f"    run {_path(python)} -I -S {_path(RELAY)} {_path(fifo)};",
             "    encoder json;", "}", ""]
    for peer in cfg.peers:
        lines += _neighbor(cfg, peer)
    return "\n".join(lines) + "\n"


def _neighbor(cfg: BgpConfig, p: PeerConfig) -> list[str]:
    family = "ipv4 unicast" if p.version == 4 else "ipv6 unicast"
    out = [f"neighbor {p.address} {{",
           f"    description \"{p.name}\";",
           f"    router-id {cfg.router_id};",
           f"    local-address {p.local_address};",
           f"    local-as {cfg.local_as};",
           f"    peer-as {p.peer_as};",
           f"    hold-time {cfg.hold_time_s};",
           "    adj-rib-in false;",
           "    adj-rib-out false;"]
    if p.passive:
        out += ["    passive true;", f"    listen {p.listen_port};"]
    else:
        out += ["    passive false;", f"    connect {p.port};"]
    if p.password is not None:
        out.append(f"    md5-password \"{p.password}\";")  # its characters are checked by oca.bgp.config
    out += [f"    family {{ {family}; }}",
            "    api {", "        processes [ oca-feed ];",
            "        receive { parsed; update; notification; }", "        neighbor-changes;", "    }",
            "}", ""]
    return out


def environment(user: str | None = None) -> dict[str, str]:
    """ExaBGP's settings as environment variables: in the foreground, as our own user (it would drop
    to `nobody` and lose the FIFO), its log on stdout for the supervisor, no CLI pipes, and an API
    process that is restarted if it dies."""
    return {
        "exabgp.daemon.daemonize": "false",
        "exabgp.daemon.user": user or getpass.getuser(),
        "exabgp.daemon.drop": "false",
        "exabgp.log.destination": "stdout",
        "exabgp.log.level": "INFO",
        "exabgp.log.short": "true",
        "exabgp.api.cli": "false",
        "exabgp.api.ack": "false",
        "exabgp.api.respawn": "true",
        "exabgp.tcp.bind": "",
        "exabgp.tcp.once": "false",
    }


def _path(path: Path) -> str:
    text = str(path)
    if any(c.isspace() or c in ';{}"\'' for c in text):
        raise ValueError(f"{text!r}: ExaBGP's config cannot hold this path")
    return text


__all__ = ["render", "environment"]
