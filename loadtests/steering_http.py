"""GET /v1/steer under wrk, the server pinned to one core (taskset), wrk to the other.

    python loadtests/steering_http.py [--seconds 10] [--connections 32] [--log-decisions]

Builds the same fleet as steering_core.py (1,000 appliances in 100 sites, 100k prefixes), starts
`steering serve` on 127.0.0.1, reports every appliance up with its inventory, then runs wrk with a
Lua script cycling through 2,000 (file, client) pairs. Reports req/s, latency and the server's CPU
time per request (from /proc/PID/stat: wrk shares the machine, so CPU per request is the fairer
number). Needs /usr/bin/wrk and taskset.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contracts.heartbeat import (CONTENT_TYPE, SIGNATURE_HEADER, HealthSnapshot, Heartbeat,  # noqa: E402
                                 InventoryUpdate, Load, encode_heartbeat, sign_body)
from contracts.keys import derive_keyring, load_keyring, write_new_keyfile  # noqa: E402
from steering_core import make_queries, make_state  # noqa: E402


def write_fleet(path: Path, fleet) -> None:
    lines = []
    for site in fleet.sites.values():
        prefixes = ", ".join(f'"{p}"' for p in site.prefixes)
        lines.append(f'[[sites]]\nid = "{site.id}"\nlatitude = {site.latitude}\nlongitude = {site.longitude}\n'
                     f'prefixes = [{prefixes}]\n')
        for a in site.appliances:
            lines.append(f'[[sites.appliances]]\nid = "{a.id}"\nbase_url = "{a.base_url}"\n'
                         f'capacity_gbps = {a.capacity_bps / 1e9}\n')
    path.write_text("\n".join(lines))


TOKEN = secrets.token_urlsafe(24)  # the benchmark's caller (role "steer"), as playback would be


def write_config(folder: Path, port: int, log_decisions: bool) -> Path:
    write_new_keyfile(folder / "keys.toml")
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    (folder / "callers.toml").write_text(f'[callers.bench]\ntoken_sha256 = "{digest}"\nroles = ["steer"]\n')
    config = folder / "steering.toml"
    config.write_text(f"""[steering]
listen = "127.0.0.1"
port = {port}
fleet_file = "fleet.toml"
key_file = "keys.toml"
callers_file = "callers.toml"
default_site = "s000"
log_decisions = {str(log_decisions).lower()}
drain_grace_s = 0
[health]
report_interval_s = 3600
""")
    return config


def report(url: str, state, master) -> None:
    """Every appliance reports once, signed with its own derived keys, as a real one does."""
    boot = secrets.token_hex(8)
    with requests.Session() as s:
        for appliance in state.fleet.appliances:
            keys = tuple(state.inventory.files_of(appliance))
            hb = Heartbeat(appliance, state.fleet.appliances[appliance].site, 1, time.time(),
                           HealthSnapshot(True, False, Load(0.1, 1), 1000, 10**10),
                           InventoryUpdate(generation=1, full=True, added=keys), boot=boot)
            body = encode_heartbeat(hb)
            signature = sign_body(body, derive_keyring(master, appliance), appliance)
            r = s.post(url + "/v1/heartbeat", data=body,
                       headers={"Content-Type": CONTENT_TYPE, SIGNATURE_HEADER: signature})
            r.raise_for_status()


def lua_script(path: Path, queries) -> None:
    paths = ",\n".join(f'"/v1/steer?file={key}&client={ip}"' for ip, key in queries)
    path.write_text(f"""paths = {{
{paths}
}}
i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], {{["Authorization"] = "Bearer {TOKEN}"}})
end
""")


BASELINE = """
import json, sys, uvloop
from aiohttp import web
async def steer(request):
    q = request.query
    return web.Response(text=json.dumps({"locations": [q.get("file"), q.get("client")]}),
                        content_type="application/json")
app = web.Application()
app.router.add_get("/v1/steer", steer)
print("listening", flush=True)
uvloop.run(web._run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None))
"""


def run_wrk(server: subprocess.Popen, url: str, script: Path, args: argparse.Namespace, label: str) -> None:
    before, t0 = cpu_ticks(server.pid), time.monotonic()
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s",
                          "--latency", "-s", str(script), url], capture_output=True, text=True).stdout
    cpu_s = (cpu_ticks(server.pid) - before) / os.sysconf("SC_CLK_TCK")
    wall = time.monotonic() - t0
    print(out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    print(f"{label}: {total / wall:,.0f} req/s wall; server CPU {cpu_s:.2f} s over {wall:.1f} s "
          f"= {1e6 * cpu_s / total:.0f} us/request -> {total / cpu_s:,.0f} req per server CPU-second; "
          f"non-2xx: {non2xx.group(1) if non2xx else 0}")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--port", type=int, default=18180)
    p.add_argument("--log-decisions", action="store_true")
    p.add_argument("--baseline", action="store_true", help="also measure a minimal aiohttp handler")
    p.add_argument("--appliances", type=int, default=1000)
    p.add_argument("--prefixes", type=int, default=100_000)
    p.add_argument("--files", type=int, default=50_000)
    args = p.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found")
    rng = random.Random(42)
    fleet, state, prefixes, files = make_state(rng, args.appliances, args.prefixes, args.files)
    queries = make_queries(rng, prefixes, files, 2000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_fleet(folder / "fleet.toml", fleet)
        config = write_config(folder, args.port, args.log_decisions)
        log_path = folder / "steering.log"  # stdout is the JSON log (decisions too): a file, never an undrained pipe
        server = subprocess.Popen(
            ["taskset", "-c", "0", sys.executable, "-m", "steering.cli", "serve", "-c", str(config)],
            stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
        try:
            started = time.monotonic()
            while '"event":"listening"' not in log_path.read_text():
                assert server.poll() is None and time.monotonic() - started < 300, log_path.read_text()[-2000:]
                time.sleep(0.1)
            url = f"http://127.0.0.1:{args.port}"
            print(f"server up in {time.monotonic() - started:.1f} s ({len(fleet.appliances)} appliances, "
                  f"{len(fleet.prefixes)} prefixes, {len(state.inventory.holders)} files)")
            report(url, state, load_keyring(folder / "keys.toml"))
            print(f"steering sees {requests.get(url + '/healthz').json().get('up')} appliances up")
            lua_script(folder / "steer.lua", queries)
            run_wrk(server, url, folder / "steer.lua", args,
                    f"GET /v1/steer (log_decisions={args.log_decisions})")
        finally:
            server.terminate()
            server.wait(15)
        if args.baseline:  # the same wrk run against a minimal aiohttp handler: the framework's share
            base = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", BASELINE, str(args.port)],
                                    stdout=subprocess.PIPE, text=True)
            try:
                assert base.stdout is not None and base.stdout.readline().startswith("listening")
                time.sleep(0.5)
                run_wrk(base, f"http://127.0.0.1:{args.port}", folder / "steer.lua", args,
                        "baseline: minimal aiohttp handler")
            finally:
                base.terminate()
                base.wait(15)


if __name__ == "__main__":
    main()
