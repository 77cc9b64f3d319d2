"""`scripts/lab up --bgp`: BIRD 2 as the ISP's router, with a BGP session to every appliance.

Strategy. Every appliance gets a `[bgp]` table (oca.bgp) with one IPv4 session (127.0.0.1) and one IPv6
session (::1), passive, each on a port of its own: all appliances share the loopback addresses, and BIRD
tells its neighbors apart by port only when it is the one connecting. BIRD needs no root: it runs in the
foreground (`bird -f`) as one more lab daemon (supervised by labproc like the others), with its config,
control socket and pid file under `<state>/bird/`, and listens on free ports of its own rather than 179.
It announces each site's documentation client networks (ANNOUNCED: RFC 5737 and RFC 3849 space) to
that site's appliances only, each behind a customer AS, so steering (steering.core.routes) maps a
client in them to that site by the route its appliances heard; `bird_conf` and `bgp_toml` are pure,
`sessions_up` and `routes_held` read the router and steering. The routes are never forwarded: the
next hop is any documentation address.
"""
from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

ROUTER_AS = 64500  # the ISP's
LAB_AS = 40027  # the appliances' (as Open Connect's)
ROUTER_ID = "10.255.0.1"
HOLD_TIME_S = 9  # a dead router's routes leave steering this long after (oca.bgp holds them as long)
NEXT_HOP = {4: "192.0.2.254", 6: "2001:db8:ffff::1"}
# per site: client network -> the AS path behind the router's own (a customer AS, or a customer's customer)
ANNOUNCED: dict[str, dict[str, tuple[int, ...]]] = {
    "lab-a": {"198.51.100.0/24": (64510,), "2001:db8:a::/48": (64510,)},
    "lab-b": {"203.0.113.0/24": (64520, 64521), "2001:db8:b::/48": (64520, 64521)},
}


def binaries() -> tuple[str, str] | None:
    """bird and birdc (Debian's bird2, installed by scripts/setup), or None."""
    bird = shutil.which("bird") or ("/usr/sbin/bird" if Path("/usr/sbin/bird").exists() else None)
    birdc = shutil.which("birdc") or ("/usr/sbin/birdc" if Path("/usr/sbin/birdc").exists() else None)
    return (bird, birdc) if bird and birdc else None


def example_client(prefix: str) -> str:
    """An address inside `prefix` to steer: its 7th (198.51.100.7, 2001:db8:a::7)."""
    return str(ipaddress.ip_network(prefix)[7])


@dataclass(frozen=True)
class Session:
    appliance: str
    site: str
    version: int
    port: int  # the appliance's ExaBGP listen port

    @property
    def name(self) -> str:  # BIRD's protocol name
        return f"{self.appliance.replace('-', '_')}_v{self.version}"

    @property
    def address(self) -> str:
        return "127.0.0.1" if self.version == 4 else "::1"

    @property
    def routes(self) -> dict[str, tuple[int, ...]]:
        return {p: path for p, path in ANNOUNCED.get(self.site, {}).items()
                if ipaddress.ip_network(p).version == self.version}


def plan(appliances: Mapping[str, str], free_port: Callable[[str], int]) -> list[Session]:
    """Two sessions (IPv4, IPv6) per appliance (name -> site), on ports `free_port(host)` picks."""
    return [Session(name, site, version, free_port("127.0.0.1" if version == 4 else "::1"))
            for name, site in appliances.items() for version in (4, 6)]


# ---- configs (pure) ------------------------------------------------------------------------------

def bgp_toml(sessions: list[Session], appliance: str, index: int) -> str:
    """The appliance's [bgp]: passive sessions BIRD connects to, a lab-short hold time."""
    peers = "".join(f'\n[[bgp.peers]]\naddress = "{s.address}"\nlocal_address = "{s.address}"\n'
                    f"listen_port = {s.port}\n" for s in sessions if s.appliance == appliance)
    return f"""
[bgp]
local_as = {LAB_AS}
peer_as = {ROUTER_AS}
router_id = "10.255.1.{index}"
hold_time_s = {HOLD_TIME_S}
passive = true
{peers}"""


def bird_conf(sessions: list[Session], folder: Path, listen: Mapping[int, int]) -> str:
    """BIRD's config: the announced networks as static blackholes, and per session a filter exporting
    the session's site's networks (AS path prepended behind ROUTER_AS) and a BGP protocol that connects
    to the appliance. `listen`: BIRD's own port per IP version (never 179: no root needed)."""
    out = [f"router id {ROUTER_ID};", "log stderr all;", "protocol device {}"]  # into the lab's logs/bird.log
    for version in (4, 6):
        nets = sorted({p for s in sessions if s.version == version for p in s.routes})
        body = "".join(f"\n  route {p} blackhole;" for p in nets)
        out.append(f"protocol static static{version} {{ ipv{version};{body}\n}}")
    for s in sessions:
        rules = "".join(f"  if net = {p} then {{{''.join(f' bgp_path.prepend({a});' for a in reversed(path))} "
                        f"accept; }}\n" for p, path in sorted(s.routes.items()))
        out.append(f"filter out_{s.name} {{\n{rules}  reject;\n}}")
        out.append(f"protocol bgp {s.name} {{\n"
                   f"  description \"{s.appliance} ({s.site})\";\n"
                   f"  local {s.address} port {listen[s.version]} as {ROUTER_AS};\n"
                   f"  neighbor {s.address} port {s.port} as {LAB_AS};\n"
                   f"  multihop; hold time {HOLD_TIME_S}; keepalive time 3;\n"
                   f"  connect delay time 1; connect retry time 2; error wait time 1, 10;\n"
                   f"  ipv{s.version} {{ import none; export filter out_{s.name}; "
                   f"next hop address {NEXT_HOP[s.version]}; }};\n}}")
    return "\n".join(out) + "\n"


def command(bird: str, folder: Path) -> list[str]:
    return [bird, "-f", "-c", str(folder / "bird.conf"), "-s", str(folder / "bird.ctl"),
            "-P", str(folder / "bird.pid")]


# ---- reading the router and steering --------------------------------------------------------------

def birdc(birdc_path: str, folder: Path, *args: str) -> str:
    return subprocess.run([birdc_path, "-s", str(folder / "bird.ctl"), *args], capture_output=True, text=True,
                          timeout=10).stdout


def sessions_up(show_protocols: str, sessions: list[Session]) -> list[str]:
    """Pure: the sessions `birdc show protocols` does not show Established."""
    established = {line.split()[0] for line in show_protocols.splitlines() if "Established" in line}
    return [s.name for s in sessions if s.name not in established]


def routes_held(fleet: Mapping[str, Any]) -> dict[str, int]:
    """Pure: per appliance of a steering /v1/fleet, how many routes steering holds from it."""
    return {a["id"]: ((a.get("bgp") or {}).get("routes") or {}).get("prefixes") or 0
            for site in fleet.get("sites", []) for a in site.get("appliances", [])}


def expected_routes(appliance_site: str) -> int:
    return len(ANNOUNCED.get(appliance_site, {}))


def endpoints(folder: Path, birdc_path: str) -> dict[str, Any]:
    """What lab.json records of BGP: where BIRD's files are, what it announces, a client per network."""
    return {"router_as": ROUTER_AS, "config": str(folder / "bird.conf"), "socket": str(folder / "bird.ctl"),
            "birdc": birdc_path,
            "announced": {site: {p: [ROUTER_AS, *path] for p, path in nets.items()}
                          for site, nets in ANNOUNCED.items()},
            "clients": {site: {p: example_client(p) for p in nets} for site, nets in ANNOUNCED.items()}}


def banner(bgp: Mapping[str, Any], log: str, curl: str, steer_url: str) -> str:
    """Pure: the banner's BGP lines, from what `endpoints` recorded: where BIRD is, and per site a
    `curl` of `steer_url` (…/v1/steer?file=KEY) for a client in the first network announced to it."""
    lines = [f"  BGP:          on: BIRD (AS {bgp['router_as']}) is the ISP's router, a session to every appliance;"
             f" config {bgp['config']}",
             f"                birdc -s {bgp['socket']} show protocols   (log: {log})"]
    for site, nets in bgp["announced"].items():
        client = next(iter(bgp["clients"][site].values()))
        heard = ", ".join(f"{p} path {' '.join(map(str, path))}" for p, path in nets.items())
        lines.append(f"  steer {site}:  {curl} '{steer_url}&client={client}&explain=1'   ({heard})")
    return "\n".join(lines) + "\n"


__all__ = ["ANNOUNCED", "ROUTER_AS", "Session", "banner", "bgp_toml", "bird_conf", "binaries", "birdc", "command",
           "endpoints", "example_client", "expected_routes", "plan", "routes_held", "sessions_up"]
