"""The lab: the whole system on one machine, on loopback.

    origin (local directory, and `origin serve` for fill) ─ 2 steering replicas ─ 2 sites x 2 appliances ─ playback
    and Prometheus scraping them all (scripts/labprom.py: its config, node_exporters for the fill textfiles)

It makes a sample title with ffmpeg and ingests it (a 4-rung H.264 ladder, so it takes seconds),
starts every daemon with its own config under the state directory, runs one fill on every appliance
(manifests planned by steering from their heartbeats), and prints the player's URL and an ffmpeg
command that plays the title through playback -> steering -> appliance. With `--https`, the appliances,
steering and playback serve HTTPS only, with certificates of a CA the lab makes and keeps in the state
directory (labtls.py); steering's URLs are then https ones, and the banner says how to trust the CA.
With `--bgp`, BIRD runs as the ISP's router with a BGP session to every appliance (labbgp.py), announcing
documentation client networks per site; steering maps those clients by the routes the appliances heard.

Control. `lab.json` in the state directory is the record scripts read: every endpoint, and per daemon
its pid with the identity of that process (start time and /proc cmdline), what starts it again (argv,
env, cwd, log) and its health URL. A pid is signalled only while that identity still matches, through
a pidfd opened before the check, so a pid the kernel handed to another process is never signalled.
  - Foreground (`scripts/lab`): this process owns the daemons. One that dies is reported (name, exit
    code, log) and the rest keeps running; `scripts/lab restart NAME` from another shell reaches it as a
    request file in `control/`, so the new process is its child too. Ctrl-C (or `down`) stops all.
  - Detached (`up --detach`): nobody watches; `restart`, `kill`, `status` and `down` act on lab.json
    themselves, read-modify-write under an flock on `lab.lock`.

This file is the command line; labdaemons.py defines the daemons and brings them up, labproc.py holds
process identity, start/stop and lab.json. Run as a script (`scripts/lab`, or `python scripts/lab.py`),
so its own folder is on sys.path for those two.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from labdaemons import Lab
from labproc import (STOP_TIMEOUT_S, LabFile, Record, Verdict, is_ours, owner_alive, records_of, refusal, relaunch,
                     say, send, seen, stop_all, verdict, write_json)

DEFAULT_STATE = Path(__file__).resolve().parents[1] / "lab-state"


def probe(url: str | None, timeout: float = 1.5) -> str:
    """A health URL's answer in a word: ok, HTTP 503, no answer."""
    if not url:
        return "-"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return "ok" if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except OSError:
        return "no answer"


# ---- commands on a running lab -------------------------------------------------------------------

def load(state: Path) -> dict:
    lab = LabFile(state).read()
    if lab is None:
        raise SystemExit(f"lab: no lab in {state} (no lab.json)")
    return lab


def record_named(lab: dict, state: Path, name: str) -> Record:
    records = records_of(lab, state)
    if name not in records:
        raise SystemExit(f"lab: no daemon {name!r}; the lab's daemons: {', '.join(records)}")
    return records[name]


def cmd_status(state: Path, as_json: bool) -> int:
    lab = load(state)
    rows = []
    for name, rec in records_of(lab, state).items():
        found = verdict(rec, seen(rec["pid"]))
        rows.append({"name": name, "pid": rec["pid"], "state": found.value,
                     "health": probe(rec.get("health")) if found is Verdict.OURS else "-",
                     "restarts": rec.get("restarts", 0), "log": rec.get("log", "")})
    alive = all(r["state"] == Verdict.OURS.value for r in rows)
    if as_json:
        print(json.dumps({"owner": lab.get("owner") if owner_alive(lab) else None, "daemons": rows}, indent=2))
        return 0 if alive else 3
    mode = f"foreground, pid {lab['owner']['pid']}" if owner_alive(lab) else "detached"
    print(f"lab in {state} ({mode}{'' if lab.get('ready', True) else ', starting'})")
    print(f"{'NAME':<12} {'PID':>7}  {'STATE':<30} {'HEALTH':<10} {'RESTARTS':>8}  LOG")
    for r in rows:
        print(f"{r['name']:<12} {r['pid']:>7}  {r['state']:<30} {r['health']:<10} {r['restarts']:>8}  {r['log']}")
    return 0 if alive else 3


def cmd_kill(state: Path, name: str, sig: signal.Signals) -> int:
    rec = record_named(load(state), state, name)
    found = send(rec, sig)
    if found is Verdict.OURS:
        print(f"lab: sent {sig.name} to {name} (pid {rec['pid']})")
        return 0
    print(f"lab: {name} is not running (pid {rec['pid']})" if found is Verdict.GONE else f"lab: {refusal(name, rec)}",
          file=sys.stderr)
    return 1 if found is Verdict.GONE else 2


def ask_owner(state: Path, lab: dict, ask: dict, timeout_s: float) -> dict:
    """Hand a request to a foreground lab (a file in control/) and wait for its answer."""
    control = state / "control"
    control.mkdir(exist_ok=True)
    rid = f"{os.getpid()}-{secrets.token_hex(4)}"
    write_json(control / f"{rid}.req", ask)
    done = control / f"{rid}.done"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done.exists():
            answer = json.loads(done.read_text())
            done.unlink(missing_ok=True)
            return answer
        if not owner_alive(lab):
            break
        time.sleep(0.2)
    (control / f"{rid}.req").unlink(missing_ok=True)
    raise SystemExit(f"lab: the foreground lab (pid {lab['owner']['pid']}) did not answer the request")


def cmd_restart(state: Path, name: str, wait_s: float) -> int:
    lab = load(state)
    record_named(lab, state, name)
    if owner_alive(lab):  # a foreground lab: it restarts the daemon itself, so it stays its child
        rec = restart_through_owner(state, lab, name)
    else:
        rec = restart_detached(state, name)
    print(f"lab: restarted {name}: pid {rec['pid']} (log: {rec['log']})")
    if wait_s <= 0 or not rec.get("health"):
        return 0
    return wait_healthy(name, rec, wait_s)


def restart_through_owner(state: Path, lab: dict, name: str) -> Record:
    answer = ask_owner(state, lab, {"action": "restart", "name": name}, STOP_TIMEOUT_S + 30)
    if not answer.get("ok"):
        raise SystemExit(f"lab: {answer.get('error')}")
    return answer["record"]


def restart_detached(state: Path, name: str) -> Record:
    lab_file = LabFile(state)
    with lab_file.locked():
        lab = load(state)
        if "daemons" not in lab:
            raise SystemExit("lab: this lab.json records no command lines (an older lab): `down` and `up` it")
        _, rec = relaunch(state, name, lab["daemons"][name])
        lab["daemons"][name] = rec
        lab["pids"][name] = rec["pid"]
        lab_file.write(lab)
    return rec


def wait_healthy(name: str, rec: Record, wait_s: float) -> int:
    started = time.monotonic()
    while time.monotonic() - started < wait_s:
        if probe(rec["health"]) == "ok":
            print(f"lab: {name} answers {rec['health']} after {time.monotonic() - started:.1f} s")
            return 0
        if not is_ours(rec):
            break
        time.sleep(0.2)
    print(f"lab: {name} is not healthy (see {rec['log']})", file=sys.stderr)
    return 1


def cmd_down(state: Path) -> int:
    lab = LabFile(state).read()
    if lab is None:
        print("lab: no running lab found", file=sys.stderr)
        return 1
    if owner_alive(lab) and send(lab["owner"], signal.SIGTERM) is Verdict.OURS:
        say(f"asked the lab (pid {lab['owner']['pid']}) to stop everything…")
        deadline = time.monotonic() + STOP_TIMEOUT_S + 30
        while owner_alive(lab) and time.monotonic() < deadline:
            time.sleep(0.2)
        if LabFile(state).read() is None:
            print("lab: stopped")
            return 0
        lab = LabFile(state).read() or lab
    items = list(reversed(records_of(lab, state).items()))
    refused = stop_all(items)
    LabFile(state).remove()
    print(f"lab: stopped {', '.join(n for n, _ in reversed(items) if n not in refused)}"
          + (f"; refused {', '.join(refused)} (pid reused)" if refused else ""))
    return 0


def cmd_up(state: Path, args: argparse.Namespace) -> int:
    state.mkdir(parents=True, exist_ok=True)
    running = LabFile(state).read()
    if running and any(is_ours(r) for r in records_of(running, state).values()):
        raise SystemExit(f"lab: a lab is already running in {state} (scripts/lab status, scripts/lab down)")
    lab = Lab(state, args.replicas, args.detach, https=args.https, bgp=args.bgp)
    signal.signal(signal.SIGTERM, lab.interrupt)  # as Ctrl-C: stop all
    signal.signal(signal.SIGINT, lab.interrupt)
    started = False
    try:
        lab.up(args.seconds, fill=not args.no_fill)
        started = True
        if not args.detach:
            lab.watch()
    except KeyboardInterrupt:
        pass
    finally:
        if not (args.detach and started):
            say("stopping…")
            lab.down()
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="scripts/lab", description="The whole system on this machine, on loopback.")
    ap.add_argument("action", nargs="?", default="up", choices=["up", "down", "status", "kill", "restart"])
    ap.add_argument("name", nargs="?", help="kill/restart: a daemon as lab.json names it (lab-a1, steering-2, …)")
    ap.add_argument("--state", type=Path, default=DEFAULT_STATE)
    ap.add_argument("--seconds", type=int, default=20, help="up: length of the sample title")
    ap.add_argument("--detach", action="store_true", help="up: start, print, and leave it running")
    ap.add_argument("--no-fill", action="store_true", help="up: skip the first fill (appliances start empty)")
    ap.add_argument("--https", action="store_true",
                    help="up: appliances, steering and playback on HTTPS, with a throwaway CA the lab makes")
    ap.add_argument("--bgp", action="store_true",
                    help="up: BIRD as the ISP's router, announcing client networks per site to the appliances")
    ap.add_argument("--replicas", type=int, default=2, help="up: steering replicas")
    ap.add_argument("--json", action="store_true", help="status: as JSON")
    ap.add_argument("--signal", default="KILL", help="kill: the signal (default KILL, as a crash)")
    ap.add_argument("--wait", type=float, default=60.0, help="restart: seconds to wait for /healthz (0: don't)")
    return ap


def signal_named(ap: argparse.ArgumentParser, name: str) -> signal.Signals:
    try:
        return signal.Signals[f"SIG{name.upper().removeprefix('SIG')}"]
    except KeyError:
        ap.error(f"--signal {name}: not a signal name (KILL, TERM, HUP, ...)")


def trust_lab_ca(state: Path) -> None:
    """An https lab's health URLs answer with certificates of its own CA: this process trusts it (as the
    lab's daemons do, through SSL_CERT_FILE)."""
    ca = ((LabFile(state).read() or {}).get("tls") or {}).get("ca")
    if ca:
        os.environ["SSL_CERT_FILE"] = ca


def main() -> int:
    ap = parser()
    args = ap.parse_args()
    state = args.state.resolve()
    if args.action != "up":
        trust_lab_ca(state)
    if args.replicas < 1:
        ap.error("--replicas: at least 1")
    if args.action in ("kill", "restart") and not args.name:
        ap.error(f"{args.action} needs a NAME (see scripts/lab status)")
    if args.action == "down":
        return cmd_down(state)
    if args.action == "status":
        return cmd_status(state, args.json)
    if args.action == "kill":
        return cmd_kill(state, args.name, signal_named(ap, args.signal))
    if args.action == "restart":
        return cmd_restart(state, args.name, args.wait)
    return cmd_up(state, args)


if __name__ == "__main__":
    sys.exit(main())
