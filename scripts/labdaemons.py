"""The lab's daemons and how `up` brings them up: origin (local directory, and `origin serve` for fill),
steering replicas, 2 sites x 2 appliances, Prometheus (Debian's, scraping all of them; optional), playback.

Strategy. Each daemon gets its own config under the state directory, written by one small function
from the endpoints known so far (ports picked free on loopback); `Lab` starts them in dependency order,
waiting on each one's health, and records every start in lab.json (via labproc) before anything else can
interrupt. A sample title is made with ffmpeg and ingested (a 4-rung H.264 ladder, so it takes seconds),
then `fill plan` writes the manifests and one fill runs on every appliance. Prometheus starts before
the fill, so the fleet page's charts (playback's /v1/fleet/charts reads it) show the fill arriving; without
it the lab says so and runs on, and the page draws from its own samples. In the foreground
`Lab.watch` owns the daemons: one that dies is announced and the rest keeps running; restart requests
from other shells arrive as files in `control/`.
With `--https` (labtls.py), appliances (TLS only), the origin, steering and playback serve the lab CA's
leaf; the fleet's base URLs are https, so steering's answers are, and fills and pulls reach the origin
over https; every daemon, recorded with SSL_CERT_FILE in its environment, and this process trust the CA.
The appliances' admin ports, the node exporters and Prometheus stay plain HTTP on loopback.
With `--bgp` (labbgp.py), BIRD plays the ISP's router: one more daemon, started before the appliances,
whose `[bgp]` sessions it connects to; `up` waits until every session is up and every steering replica
holds the routes each appliance heard, so the banner's steering calls answer by BGP at once.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Mapping

import labbgp
import labprom
import labtls
from labproc import (LabFile, Record, describe_exit, identity, launch, leftovers, pid_list, relaunch, say, stop_all,
                     write_json)

BIN = Path(sys.executable).parent
TITLE = "lab-sample"
SITES = {"lab-a": ("127.0.0.0/8", 52.37, 4.90), "lab-b": ("198.18.0.0/15", 50.11, 8.68)}
LADDER = (("240p", 240, 400000), ("360p", 360, 800000), ("480p", 480, 1200000), ("720p", 720, 2500000))


HANDED_OUT: set[int] = set()  # ports free_port gave: the kernel may offer one again before its daemon binds it


def free_port(host: str = "127.0.0.1") -> int:
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in HANDED_OUT:
            HANDED_OUT.add(port)
            return port


def run(*cmd: str) -> str:
    out = subprocess.run([str(BIN / cmd[0]), *cmd[1:]], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"lab: `{' '.join(cmd)}` failed:\n{out.stderr[-2000:]}")
    return out.stdout


def get_json(url: str, timeout: float = 3.0, token_file: str | Path | None = None) -> dict:
    """GET a JSON document; with `token_file`, as the caller whose bearer token it holds."""
    headers = {"Authorization": f"Bearer {Path(token_file).read_text().strip()}"} if token_file else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
        return json.loads(resp.read())


def answers(url: str) -> Any:
    return urllib.request.urlopen(url, timeout=2)


def wait(what: str, check, timeout: float = 60.0, failed=lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (why := failed()) is not None:
            raise SystemExit(f"lab: {why} while waiting for {what}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"lab: timed out waiting for {what}")


# ---- configs: one per daemon, from what is known so far ----------------------------------------

def origin_toml(origin_dir: Path, port: int, keys: Path, tls: labtls.LabTls | None = None) -> str:
    ladder = "".join(f'[[encode.ladder]]\nname = "{name}"\nheight = {height}\nbitrate_bps = {bps}\n'
                     for name, height, bps in LADDER)
    return f"""[origin]
location = "{origin_dir}"
[serve]
listen = "127.0.0.1"
port = {port}
key_file = "{keys}"
catalog_public = true
[encode]
preset = "veryfast"
segment_s = 2.0
{ladder}""" + service_tls(tls)


def fleet_toml(appliances: Mapping[str, int], scheme: str = "http") -> str:
    fleet = []
    for site, (prefix, lat, lon) in SITES.items():
        fleet.append(f'[[sites]]\nid = "{site}"\nlatitude = {lat}\nlongitude = {lon}\nprefixes = ["{prefix}"]\n')
        for name, app_port in appliances.items():
            if name.startswith(site):
                fleet.append(f'[[sites.appliances]]\nid = "{name}"\nbase_url = "{scheme}://127.0.0.1:{app_port}"\n'
                             f"capacity_gbps = 10\n")
    return "\n".join(fleet)


def service_tls(tls: labtls.LabTls | None) -> str:
    """The origin's, steering's and playback's [tls] (contracts.tlsserve): the lab's leaf, or nothing."""
    return f'\n[tls]\ncert_file = "{tls.chain}"\nkey_file = "{tls.key}"\n' if tls is not None else ""


def steering_toml(port: int, keys: Path, manifests_dir: Path, tls: labtls.LabTls | None = None) -> str:
    return f"""[steering]
listen = "127.0.0.1"
port = {port}
fleet_file = "fleet.toml"
key_file = "{keys}"
callers_file = "callers.toml"
default_site = "lab-a"
[health]
report_interval_s = 1.0
missed_reports = 3
up_after_reports = 2
[fill]
origin = "{manifests_dir}"
poll_interval_s = 1.0
""" + service_tls(tls)


def fill_plan_toml(keys: Path, steering_urls: str, origin_dir: Path, manifests_dir: Path, origin_url: str,
                   token_file: Path) -> str:
    """The planner's config: the manifests go to their own directory, which `origin serve` does not
    serve (a manifest carries its appliance's fill credentials)."""
    return f"""[planner]
key_file = "{keys}"
state_dir = "fill-plan"
request_timeout_s = 10.0
[steering]
replicas = [{steering_urls}]
token_file = "{token_file}"
[origin]
location = "{origin_dir}"
[manifests]
location = "{manifests_dir}"
[plan]
origin_url = "{origin_url}"
"""


def appliance_toml(name: str, port: int, admin: int, keys: Path, steering_urls: str, origin_url: str,
                   pull_keys: Path, tls: labtls.LabTls | None = None, bgp: str = "") -> str:
    """With `tls`, `port` is the HTTPS port (oca.tlsconf's [tls], HTTPS only) and plain HTTP gets none;
    `bgp` is the appliance's [bgp] table (labbgp.bgp_toml) or nothing."""
    https = (f'[tls]\nport = {port}\nplain_port = false\n[[tls.certificates]]\ncert = "{tls.chain}"\n'
             f'key = "{tls.key}"\n') if tls is not None else ""
    return f"""[appliance]
id = "{name}"
site = "{name[:5]}"
[http]
listen = "127.0.0.1"
port = {0 if tls is not None else port}
workers = 1
access_log = false
[admin]
listen = "127.0.0.1"
port = {admin}
[tokens]
key_file = "{keys}"
[store]
index = "state/index.db"
[[tiers.ssd]]
path = "ssd0"
[[tiers.hdd]]
path = "hdd0"
[steering]
urls = [{steering_urls}]
report_interval_s = 1.0
[pull_through]
enabled = true
parent = "{origin_url}"
key_file = "{pull_keys}"
{https}{bgp}"""


def playback_toml(port: int, steering_urls: str, origin_dir: Path, prometheus_url: str | None,
                  tls: labtls.LabTls | None = None) -> str:
    charts = (f'prometheus_url = "{prometheus_url}"\ncharts_rate_window_s = {4 * labprom.SCRAPE_INTERVAL_S:g}\n'
              if prometheus_url else "")
    return f"""[playback]
listen = "127.0.0.1"
port = {port}
steering_urls = [{steering_urls}]
steering_token_file = "playback.token"
{charts}[origin]
location = "{origin_dir}"
""" + service_tls(tls)


# ---- the lab -------------------------------------------------------------------------------------

class Lab:
    OPTIONAL = ("prometheus", "node-")  # names (and prefixes) whose death while `up` waits is reported, not fatal

    def __init__(self, state: Path, replicas: int, detach: bool, https: bool = False, bgp: bool = False) -> None:
        # where, and how it runs
        self.state = state
        self.file = LabFile(state)
        self.replicas = replicas
        self.detach = detach
        self.https = https  # appliances, steering and playback on HTTPS (the lab's own CA: labtls)
        self.tls: labtls.LabTls | None = None  # made at `up` when https
        self.scheme = "https" if https else "http"
        self.bgp = bgp  # BIRD as the ISP's router, a session to every appliance (labbgp)
        self.sessions: list[labbgp.Session] = []  # planned at `up` when bgp
        # the daemons, in start order: what this process started (and owns while it runs), their records
        self.procs: dict[str, subprocess.Popen] = {}
        self.daemons: dict[str, Record] = {}
        self.reported: set[str] = set()  # deaths already announced
        # Ctrl-C/SIGTERM: deferred while a daemon is started and recorded, ignored once stopping
        self.critical = False
        self.interrupted = False
        # what scripts read in lab.json
        self.endpoints: dict[str, Any] = {}

    def interrupt(self, signum: int, frame: Any) -> None:
        """Ctrl-C and SIGTERM stop the lab, but never between starting a daemon and recording it."""
        if self.critical:
            self.interrupted = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def uninterrupted(self) -> Iterator[None]:
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
        if self.interrupted:
            raise KeyboardInterrupt

    def spawn(self, name: str, *cmd: str, health: str | None = None) -> subprocess.Popen:
        with self.uninterrupted():
            env = self.tls.env() if self.tls is not None else {}  # recorded: a restart trusts the CA too
            proc, record = launch(self.state, name, [str(BIN / cmd[0]), *cmd[1:]], env, health)
            self.procs[name], self.daemons[name] = proc, record
            self.publish(ready=False)
        return proc

    def wait(self, what: str, check, timeout: float = 60.0) -> None:
        """Wait for `check`; give up at once, naming it, if a daemon started so far has died."""
        def failed() -> str | None:
            for name, proc in self.procs.items():
                if proc.poll() is not None and not name.startswith(self.OPTIONAL):
                    return f"{name} died ({describe_exit(proc.returncode)}; log: {self.daemons[name]['log']})"
            return None
        wait(what, check, timeout, failed)

    def publish(self, ready: bool) -> None:
        """lab.json: while `up` runs, and for a foreground lab, this process is the owner `down` asks."""
        owner = None if ready and self.detach else identity(os.getpid())
        data = {**self.endpoints, "ready": ready, "owner": owner,
                "pids": {n: r["pid"] for n, r in self.daemons.items()}, "daemons": self.daemons}
        with self.file.locked():
            self.file.write(data)

    def steering_urls(self) -> str:
        return ", ".join(f'"{u}"' for u in self.endpoints["steering_replicas"].values())

    # ---- pieces ----------------------------------------------------------------------------
    def keys(self) -> Path:
        """Steering's master key file (only steering reads it)."""
        path = self.state / "keys.toml"
        if not path.exists():
            from contracts.keys import write_new_keyfile

            write_new_keyfile(path)
        return path

    def callers(self) -> None:
        """Who may call steering: playback (steer, fleet) and the lab's operator (every role, for
        scripts and the chaos soak); each token in a file of its own, steering keeps their hashes."""
        from contracts.callers import new_token

        lines = []
        for name, roles in (("playback", ["steer", "fleet"]),
                            ("operator", ["steer", "fleet", "manifests", "demand", "withdraw"])):
            token, digest = new_token()
            token_file = self.state / f"{name}.token"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
            lines.append(f'[callers.{name}]\ntoken_sha256 = "{digest}"\nroles = {json.dumps(roles)}\n')
        (self.state / "callers.toml").write_text("\n".join(lines))
        self.endpoints["operator_token_file"] = str(self.state / "operator.token")

    def derived(self, master: Path, holder: str, pull_from: str | None = None) -> Path:
        """The key file `holder` (an appliance, "origin") is provisioned with: derived for it alone;
        with `pull_from`, its fill keys for pulling from that parent (`steering keys derive --pull-from`)."""
        from contracts.keys import derive_keyring, keyfile_text, load_keyring
        from contracts.token import fill_keys

        master_ring = load_keyring(master)
        if pull_from is None:
            path, text = self.state / "keys" / f"{holder}.toml", keyfile_text(derive_keyring(master_ring, holder), holder)
        else:
            path = self.state / "keys" / f"{holder}-pull-{pull_from}.toml"
            text = keyfile_text(fill_keys(derive_keyring(master_ring, pull_from), holder), f"fill:{holder}@{pull_from}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600)
        return path

    def origin(self, keys: Path, seconds: int) -> None:
        port = free_port()
        config = self.state / "origin.toml"
        config.write_text(origin_toml(self.state / "origin", port, self.derived(keys, "origin"), self.tls))
        self.sample(config, seconds)
        url = self.endpoints["origin"] = f"{self.scheme}://127.0.0.1:{port}"
        self.spawn("origin", "origin", "serve", "-c", str(config), health=f"{url}/healthz")
        self.wait("origin", lambda: answers(f"{url}/healthz"))

    def sample(self, config: Path, seconds: int) -> None:
        sample_dir = self.state / "sample"
        if not (sample_dir / "sample.mp4").exists():
            say(f"making a {seconds} s sample title (ffmpeg test pattern and tone)…")
            run("origin", "sample", str(sample_dir), "--seconds", str(seconds), "--size", "1280x720", "--fps", "25")
        say("ingesting it into the origin (ABR ladder, byte-range playlists, catalog entry)…")
        run("origin", "ingest", str(sample_dir / "sample.mp4"), "-c", str(config),
            "--title-id", TITLE, "--title", "Lab Sample", "--genres", "test", "--languages", "en")

    def steering(self, keys: Path, appliances: dict[str, int]) -> None:
        (self.state / "fleet.toml").write_text(fleet_toml(appliances, self.scheme))
        self.callers()
        replicas = {}
        for i in range(1, self.replicas + 1):  # independent replicas: every appliance reports to each
            name, port = f"steering-{i}", free_port()
            (self.state / f"{name}.toml").write_text(
                steering_toml(port, keys, self.state / "manifests", self.tls))
            replicas[name] = f"{self.scheme}://127.0.0.1:{port}"
            self.endpoints["steering_replicas"] = replicas
            self.endpoints.setdefault("steering", replicas[name])  # the first: what older scripts read
            self.spawn(name, "steering", "serve", "-c", str(self.state / f"{name}.toml"),
                       health=f"{replicas[name]}/healthz")
        for name, url in replicas.items():
            self.wait(name, lambda url=url: answers(f"{url}/healthz"))

    def appliances(self, keys: Path, ports: dict[str, int]) -> None:
        for name, port in ports.items():
            root = self.state / "appliances" / name
            for disk in ("ssd0", "hdd0"):
                (root / disk).mkdir(parents=True, exist_ok=True)
            admin = free_port()
            own = self.derived(keys, name)
            pull = self.derived(keys, name, pull_from="origin")
            bgp = labbgp.bgp_toml(self.sessions, name, len(self.endpoints.get("appliances", {})) + 1
                                  ) if self.sessions else ""
            (root / "oca.toml").write_text(appliance_toml(name, port, admin, own, self.steering_urls(),
                                                          self.endpoints["origin"], pull, self.tls, bgp))
            self.endpoints.setdefault("appliances", {})[name] = {
                "url": f"{self.scheme}://127.0.0.1:{port}", "admin": f"http://127.0.0.1:{admin}",
                "config": str(root / "oca.toml")}
            self.spawn(name, "oca", "serve", "-c", str(root / "oca.toml"), health=f"http://127.0.0.1:{admin}/healthz")
        for url in self.endpoints["steering_replicas"].values():
            self.wait(f"{len(ports)} appliances up in steering {url}",
                      lambda url=url: get_json(f"{url}/healthz").get("up") == len(ports), timeout=90)

    def router(self, appliances: list[str]) -> None:
        """BIRD, the ISP's router (labbgp): its config under bird/, then the daemon; it connects to the
        appliances' passive sessions as they come up (retrying every 2 s)."""
        found = labbgp.binaries()
        if found is None:
            raise SystemExit("lab: --bgp needs BIRD 2 (bird, birdc), which scripts/setup installs")
        bird, birdc = found
        folder = self.state / "bird"
        folder.mkdir(exist_ok=True)
        self.sessions = labbgp.plan({name: labprom.site_of(name) for name in appliances}, free_port)
        listen = {4: free_port("127.0.0.1"), 6: free_port("::1")}
        (folder / "bird.conf").write_text(labbgp.bird_conf(self.sessions, folder, listen))
        self.endpoints["bgp"] = labbgp.endpoints(folder, birdc)
        self.spawn("bird", *labbgp.command(bird, folder))
        self.wait("bird's control socket", lambda: (folder / "bird.ctl").exists(), timeout=15)

    def routes_learned(self) -> None:
        """Every BIRD session Established, then every steering replica holding each appliance's routes."""
        bgp = self.endpoints["bgp"]
        folder = Path(bgp["config"]).parent
        self.wait(f"{len(self.sessions)} BGP sessions up (birdc -s {bgp['socket']} show protocols)",
                  lambda: not labbgp.sessions_up(labbgp.birdc(bgp["birdc"], folder, "show", "protocols"),
                                                 self.sessions))
        want = {name: labbgp.expected_routes(labprom.site_of(name)) for name in self.endpoints["appliances"]}
        token = self.state / "operator.token"
        for url in self.endpoints["steering_replicas"].values():
            self.wait(f"steering {url} holding the routes every appliance heard", lambda url=url: all(
                labbgp.routes_held(get_json(f"{url}/v1/fleet", token_file=token)).get(a, 0) >= n
                for a, n in want.items()))

    def fill(self) -> None:
        """`fill plan` (the fleet's planner, as its timer runs it before the window), then one fill run on
        every appliance once each steering replica serves the new plan."""
        say("nightly fill, now: `fill plan` writes every appliance's manifest…")
        keys = self.state / "keys.toml"
        config = self.state / "fill-plan.toml"
        config.write_text(fill_plan_toml(keys, self.steering_urls(), self.state / "origin", self.state / "manifests",
                                         self.endpoints["origin"], self.state / "operator.token"))
        with open(self.state / "logs" / "fill-plan.log", "ab") as out:
            code = subprocess.run([str(BIN / "fill"), "plan", "-c", str(config)], stdout=out,
                                  stderr=subprocess.STDOUT).returncode
        say(f"fill plan: exit {code} (log: {self.state / 'logs' / 'fill-plan.log'})")
        if code != 0:
            return
        token = self.state / "operator.token"
        for url in self.endpoints["steering_replicas"].values():
            for name in self.endpoints["appliances"]:
                self.wait(f"{url} serving the plan for {name}", lambda url=url, name=name: get_json(
                    f"{url}/v1/fill-manifest?appliance={name}", token_file=token).get("appliance") == name)
        say("…and each appliance fetches its manifest (peer first, then the origin)")
        steering = [a for url in self.endpoints["steering_replicas"].values() for a in ("--steering", url)]
        runs = {name: subprocess.Popen(
            [str(BIN / "oca"), "fill", "-c", info["config"], *steering,
             "--origin", str(self.endpoints["origin"]), "--ignore-window", "--no-progress"],
            stdout=open(self.state / "logs" / f"fill-{name}.log", "ab"), stderr=subprocess.STDOUT)
            for name, info in self.endpoints["appliances"].items()}
        for name, proc in runs.items():
            code = proc.wait(600)
            say(f"fill {name}: exit {code} (log: {self.state / 'logs' / f'fill-{name}.log'})")

    def prometheus(self, playback_port: int) -> None:
        """Debian's prometheus scraping every daemon (playback's target is down until it starts). Missing or
        failing, it is reported and the lab goes on without it (the fleet page draws from its own samples)."""
        binary = labprom.binary()
        if binary is None:
            return say("prometheus is not installed (scripts/setup installs it): the lab runs without it")
        self.fill_exporters()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        planned = {**self.endpoints, "playback": f"{self.scheme}://127.0.0.1:{playback_port}"}
        found = labprom.targets(planned, prometheus_address=f"127.0.0.1:{port}")
        (self.state / "prometheus.yml").write_text(labprom.prometheus_yml(found))
        proc = self.spawn("prometheus", *labprom.command(binary, self.state, port), health=f"{url}/-/ready")
        try:
            wait("prometheus", lambda: answers(f"{url}/-/ready"), 30,
                 lambda: None if proc.poll() is None else f"prometheus exited ({describe_exit(proc.returncode)})")
        except SystemExit as exc:
            return say(f"{str(exc).removeprefix('lab: ')}; log: {self.daemons['prometheus']['log']}; the lab goes on")
        self.endpoints["prometheus"] = url

    def fill_exporters(self) -> None:
        """Beside each appliance, as on its host, a node_exporter whose textfile collector reads the fill
        agent's fill-metrics.prom: the fill chart's manifest sizes."""
        binary = labprom.binary("prometheus-node-exporter")
        if binary is None:
            say("prometheus-node-exporter is not installed (scripts/setup installs it): no fill progress chart")
            return
        for name, info in self.endpoints["appliances"].items():
            textfiles = Path(info["config"]).parent / "state" / "fill"  # the agent's default state directory
            textfiles.mkdir(parents=True, exist_ok=True)
            port = free_port()
            self.spawn(f"node-{name}", *labprom.node_exporter_command(binary, textfiles, port),
                       health=f"http://127.0.0.1:{port}/")
            self.endpoints.setdefault("fill_exporters", {})[name] = f"http://127.0.0.1:{port}"

    def playback(self, port: int) -> None:
        (self.state / "playback.toml").write_text(playback_toml(port, self.steering_urls(), self.state / "origin",
                                                                self.endpoints.get("prometheus"), self.tls))
        url = self.endpoints["playback"] = f"{self.scheme}://127.0.0.1:{port}"
        self.spawn("playback", "playback", "serve", "-c", str(self.state / "playback.toml"), health=f"{url}/healthz")
        self.wait("playback", lambda: answers(f"{url}/healthz"))

    # ---- the whole ---------------------------------------------------------------------------
    def up(self, seconds: int, fill: bool) -> None:
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        (self.state / "control").mkdir(exist_ok=True)
        for stale in (self.state / "control").iterdir():
            stale.unlink()
        keys = self.keys()
        if self.https:  # before any daemon starts: each one, and this process's clients, trust the lab's CA
            self.tls = labtls.ensure(self.state / "tls")
            os.environ.update(self.tls.env())
            self.endpoints["tls"] = self.tls.as_json()
        ports = {f"{site}{i}": free_port() for site in SITES for i in (1, 2)}  # with https: their HTTPS ports
        playback_port = free_port()
        self.origin(keys, seconds)
        self.steering(keys, ports)
        if self.bgp:
            self.router(list(ports))
        self.appliances(keys, ports)
        if self.bgp:
            self.routes_learned()
        self.prometheus(playback_port)
        if fill:
            self.fill()
        self.playback(playback_port)
        self.endpoints["title"] = TITLE
        self.publish(ready=True)
        print(self.banner(), flush=True)

    def banner(self) -> str:
        pb = self.endpoints["playback"]
        how = "scripts/lab down stops it" if self.detach else "Ctrl-C (or scripts/lab down) stops everything"
        prom = (f"{self.endpoints['prometheus']}/targets   (every daemon; {self.state / 'prometheus.yml'})"
                if "prometheus" in self.endpoints else "not running (see above)")
        cacert = f"--cacert {self.tls.ca} " if self.tls is not None else ""
        https = labtls.trust_help(self.tls, f"{pb}/play/{TITLE}") + "\n" if self.tls is not None else ""
        bgp = self.bgp_banner(cacert) if self.bgp else ""
        return f"""
The lab is up ({self.state / 'lab.json'} lists every endpoint):
  web player:   {pb}/play/{TITLE}      catalog: {pb}/      fleet: {pb}/fleet
  play it:      ffmpeg -hide_banner -i {pb}/v1/playback/{TITLE}/master.m3u8 -f null -
  steering:     curl {cacert}-H "Authorization: Bearer $(cat {self.state / 'operator.token'})" {self.endpoints['steering']}/v1/fleet
{bgp}  prometheus:   {prom}
  daemons:      scripts/lab status | kill NAME | restart NAME   ({', '.join(self.daemons)})
{https}{how}."""

    def bgp_banner(self, cacert: str) -> str:
        """Where BIRD is, and a steering call per site for a client BGP brought it (a file of the title)."""
        try:
            catalog = json.loads((self.state / "origin" / "catalog" / f"{TITLE}.json").read_text())
            key = catalog["renditions"][0]["key"]
        except (OSError, ValueError, KeyError, IndexError):
            key = f"{TITLE}/any.mp4"  # steering ranks any key; this one only if the catalog is unreadable
        curl = f'curl {cacert}-H "Authorization: Bearer $(cat {self.state / "operator.token"})"'
        return labbgp.banner(self.endpoints["bgp"], self.daemons["bird"]["log"], curl,
                             f"{self.endpoints['steering']}/v1/steer?file={key}")

    # ---- foreground: the owner of the daemons --------------------------------------------------
    def watch(self) -> None:
        """Foreground: announce a daemon that dies and keep the rest running; serve restart requests.
        Returns when nothing is left alive."""
        while True:
            for name, proc in self.procs.items():
                code = proc.poll()
                if code is not None and name not in self.reported:
                    self.reported.add(name)
                    self.announce(name, code)
            self.serve_requests()
            if all(p.poll() is not None for p in self.procs.values()):
                say("no daemon is left running: the lab stops")
                return
            time.sleep(0.5)

    def announce(self, name: str, code: int) -> None:
        record = self.daemons[name]
        left = leftovers(record)
        extra = f"; {len(left)} process(es) of its session still run (pids {pid_list(left)})" if left else ""
        say(f"{name} (pid {record['pid']}) died: {describe_exit(code)}; log: {record['log']}{extra}. "
            f"The rest keeps running; `scripts/lab restart {name}` starts it again.")

    def serve_requests(self) -> None:
        for request in sorted((self.state / "control").glob("*.req")):
            try:
                ask = json.loads(request.read_text())
            except (OSError, ValueError):
                ask = {}
            request.unlink(missing_ok=True)
            with self.uninterrupted():
                write_json(request.with_suffix(".done"), self.answer(ask))

    def answer(self, ask: Mapping[str, Any]) -> dict:
        name = ask.get("name")
        if ask.get("action") != "restart" or name not in self.daemons:
            return {"ok": False, "error": f"cannot {ask.get('action')!r} {name!r}"}
        say(f"restarting {name} (asked from another shell)…")
        self.procs[name], self.daemons[name] = relaunch(self.state, name, self.daemons[name])
        self.reported.discard(name)
        self.publish(ready=True)
        return {"ok": True, "record": self.daemons[name]}

    def down(self) -> None:
        self.critical = True  # a second Ctrl-C does not cut the stopping short
        stop_all(list(reversed(self.daemons.items())))
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self.file.remove()
