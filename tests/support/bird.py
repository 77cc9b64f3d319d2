"""A real BIRD 2 as the ISP's router, on loopback with non-standard ports: one BGP protocol per
appliance session, connecting to the appliance's ExaBGP (passive, listening on its own port: every
appliance of a test shares 127.0.0.1 and ::1, and BIRD tells its neighbors apart by port only when it
is the one connecting). What each session announces is chosen per prefix — an AS path (prepended after
the router's own AS) and a MED — and changed with `announce(...)` + `configure()` (`birdc configure`),
as an ISP engineer would.

    router = BirdRouter(tmp_path, asn=64500)
    router.session("ams-1-v4", "127.0.0.1", 40179, routes={"192.0.2.0/24": Announce(med=10)})
    with router:
        ...
        router.announce("ams-1-v4", {"192.0.2.0/25": Announce(path=(64510,))})
        router.configure()

Everything runs as a child of the test (bird -f), killed at exit; the control socket and the log are
in the test's folder.
"""
from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import stop_process

BIRD = shutil.which("bird") or "/usr/sbin/bird"
BIRDC = shutil.which("birdc") or "/usr/sbin/birdc"
# BGP wants a next hop it can reach; routes here are never forwarded, so any documentation address does
NEXT_HOP = {4: "192.0.2.254", 6: "2001:db8:ffff::1"}


def available() -> bool:
    return Path(BIRD).exists() and Path(BIRDC).exists()


@dataclass(frozen=True)
class Announce:
    path: tuple[int, ...] = ()  # ASes after the router's own (prepended in this order)
    med: int | None = None


@dataclass
class Session:
    name: str
    neighbor: str  # the appliance's address
    port: int  # the appliance's ExaBGP listen port
    peer_as: int
    routes: dict[str, Announce] = field(default_factory=dict)
    password: str | None = None
    enabled: bool = True

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.neighbor).version


class BirdRouter:
    def __init__(self, folder: Path, asn: int = 64500, hold_time_s: int = 3, router_id: str = "10.255.0.1",
                 listen_port: int | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.asn = asn
        self.hold_time_s = hold_time_s
        self.router_id = router_id
        self.listen_port = listen_port  # BIRD's own (incoming connections are never used here)
        self.sessions: dict[str, Session] = {}
        self.config_path = self.folder / "bird.conf"
        self.socket = self.folder / "bird.ctl"
        self.log_path = self.folder / "bird.log"
        self.proc: subprocess.Popen | None = None

    # ---- what the router announces -------------------------------------------------------------
    def session(self, name: str, neighbor: str, port: int, peer_as: int = 40027,
                routes: dict[str, Announce] | None = None, password: str | None = None) -> Session:
        s = self.sessions[name] = Session(name, neighbor, port, peer_as, dict(routes or {}), password)
        return s

    def announce(self, name: str, routes: dict[str, Announce]) -> None:
        self.sessions[name].routes.update(routes)

    def withdraw(self, name: str, *prefixes: str) -> None:
        for p in prefixes:
            self.sessions[name].routes.pop(p, None)

    def render(self) -> str:
        out = [f"router id {self.router_id};", f'log "{self.log_path}" all;', "protocol device {}"]
        for version in (4, 6):
            nets = sorted({p for s in self.sessions.values() for p in s.routes
                           if ipaddress.ip_network(p).version == version})
            body = "".join(f"\n  route {p} blackhole;" for p in nets)
            out.append(f"protocol static static{version} {{ ipv{version};{body}\n}}")
        for s in self.sessions.values():
            out.append(self._filter(s))
            out.append(self._protocol(s))
        return "\n".join(out) + "\n"

    def _filter(self, s: Session) -> str:
        lines = [f"filter out_{_ident(s.name)} {{"]
        for prefix, a in sorted(s.routes.items()):
            actions = "".join(f" bgp_path.prepend({asn});" for asn in reversed(a.path))
            if a.med is not None:
                actions += f" bgp_med = {a.med};"
            lines.append(f"  if net = {prefix} then {{{actions} accept; }}")
        lines += ["  reject;", "}"]
        return "\n".join(lines)

    def _protocol(self, s: Session) -> str:
        local = "127.0.0.1" if s.version == 4 else "::1"
        port = f" port {self.listen_port}" if self.listen_port else ""
        password = f'\n  password "{s.password}";' if s.password else ""
        return (f"protocol bgp {_ident(s.name)} {{\n"
                f"  local {local}{port} as {self.asn};\n"
                f"  neighbor {s.neighbor} port {s.port} as {s.peer_as};\n"
                f"  multihop; hold time {self.hold_time_s}; keepalive time 1;\n"
                f"  connect delay time 1; connect retry time 1; error wait time 1, 2;{password}\n"
                f"  {'disabled;' if not s.enabled else ''}\n"
                f"  ipv{s.version} {{ import none; export filter out_{_ident(s.name)}; "
                f"next hop address {NEXT_HOP[s.version]}; }};\n}}")

    # ---- the process ---------------------------------------------------------------------------
    def start(self) -> "BirdRouter":
        self.config_path.write_text(self.render())
        self.proc = subprocess.Popen([BIRD, "-f", "-c", str(self.config_path), "-s", str(self.socket),
                                      "-P", str(self.folder / "bird.pid")],
                                     stdout=subprocess.DEVNULL, stderr=open(self.folder / "bird.err", "wb"),
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bird did not start: {(self.folder / 'bird.err').read_text()}")
            time.sleep(0.02)
        return self

    def configure(self) -> str:
        """Write the config and `birdc configure` (BIRD re-exports what changed)."""
        self.config_path.write_text(self.render())
        out = self.birdc("configure")
        if "Reconfigured" not in out and "Reconfiguration in progress" not in out:
            raise RuntimeError(f"birdc configure: {out}")
        return out

    def birdc(self, *command: str) -> str:
        return subprocess.run([BIRDC, "-s", str(self.socket), *command], capture_output=True, text=True,
                              timeout=10).stdout

    def established(self, name: str) -> bool:
        return "Established" in self.birdc("show", "protocols", _ident(name))

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout_s=5)
            self.proc = None

    def __enter__(self) -> "BirdRouter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ident(name: str) -> str:
    return "s_" + "".join(c if c.isalnum() else "_" for c in name)


__all__ = ["Announce", "BirdRouter", "available", "NEXT_HOP"]
