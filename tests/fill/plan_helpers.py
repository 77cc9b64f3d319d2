"""Helpers for the `fill plan` tests: real steering replicas as processes (with GET /v1/fleet/state),
`fill plan` as a process, its config, and a TEST STAND-IN for a replica's GET /v1/demand (a playback
replica, or one that answers garbage)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from aiohttp import web

from fill_helpers import AWS_ENV
from tests.steering.steer_helpers import AUTH, OPERATOR_TOKEN, log_events, wait_for_port

REPO = Path(__file__).resolve().parents[2]


def proc_env() -> dict[str, str]:
    return dict(os.environ, **AWS_ENV, PYTHONPATH=str(REPO))


class SteeringReplica:
    """`steering serve -c CONFIG` (tests/fill/steering_with_fleetstate.py), its log beside the config."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "steering.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "tests/fill/steering_with_fleetstate.py"), "serve", "-c", str(config)],
                cwd=REPO, env=proc_env(), stdout=out, stderr=subprocess.STDOUT)
        self.port = wait_for_port(self.proc, self.log)
        self.url = f"http://127.0.0.1:{self.port}"

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        return log_events(self.log, event)

    def get(self, path: str, **headers: str) -> requests.Response:
        return requests.get(self.url + path, headers={**AUTH, **headers}, timeout=10)

    def manifest(self, appliance: str, **headers: str) -> requests.Response:
        return self.get(f"/v1/fill-manifest?appliance={appliance}", **headers)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class PlanRun:
    code: int
    events: list[dict[str, Any]]
    output: str

    @property
    def summary(self) -> dict[str, Any]:
        (last,) = [e for e in self.events if e["event"] in ("plan-done", "plan-failed")]
        return last

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]


def run_plan(config: Path, *extra: str, timeout_s: float = 120) -> PlanRun:
    """`fill plan -c CONFIG` as a process (what the systemd unit runs)."""
    out = subprocess.run([sys.executable, "-m", "fill.cli", "plan", "-c", str(config), *extra], cwd=REPO,
                         env=proc_env(), capture_output=True, text=True, timeout=timeout_s)
    events = []
    for line in out.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return PlanRun(out.returncode, events, out.stdout + out.stderr)


def fill_plan_toml(path: Path, master: Path, steering: list[str], origin: str, manifests: str,
                   endpoint: str | None = None, playback: list[str] = (), plan: str = "", planner: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    token = path.parent / "fill-plan.token"
    token.write_text(OPERATOR_TOKEN + "\n")
    endpoint_line = f'endpoint_url = "{endpoint}"\n' if endpoint else ""
    path.write_text(f"""[planner]
key_file = "{master}"
state_dir = "{path.parent / 'fill-plan-state'}"
request_timeout_s = 5.0
{planner}
[steering]
replicas = {json.dumps(list(steering))}
token_file = "{token}"
[playback]
replicas = {json.dumps(list(playback))}
[origin]
location = "{origin}"
{endpoint_line}
[manifests]
location = "{manifests}"
[plan]
{plan}
""")
    return path


class DemandStandIn:
    """TEST STAND-IN for a replica's GET /v1/demand (bearer token required): answers `body` as given,
    so a test can hand the planner a well-formed report or garbage."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/demand", self._demand)
        return app

    async def _demand(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {OPERATOR_TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.Response(body=self.body, content_type="application/json")


def wait_for(predicate, timeout_s: float = 30.0, step_s: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out waiting for {what}")
