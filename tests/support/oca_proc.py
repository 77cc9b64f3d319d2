"""The appliance as a real process: `python -m oca.cli serve --dev DIR --port N ...` on 127.0.0.1.

Its stdout (JSON event lines, and the access log when on) goes to a file, never to a pipe nobody
drains; start-up waits for the `"event": "ready"` line and for the port to accept. Signed URLs are
made in-process from DIR/.oca/keys.toml (the key file the server itself uses), which is much faster
than one `oca url` process per key. SIGTERM drains and stops it; SIGKILL after a timeout.

    with OcaProcess(root, sendfile=False) as oca:
        urllib.request.urlopen(oca.signed_url("titles/a.mp4"))
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from contracts.keys import Keyring, load_keyring
from contracts.token import client_prefix_for, sign_path
from tests.support import cpu_seconds, free_port, stop_process, wait_for_port, worker_pids_of

REPO = Path(__file__).resolve().parents[2]


class OcaProcess:
    """`oca serve --dev root` on a free 127.0.0.1 port.

    log_path: where stdout goes (default: a temp file, removed on exit). extra_args are passed
    through to `oca serve`.
    """

    def __init__(self, root: Path | str, *, workers: int | None = None, sendfile: bool = True,
                 access_log: bool = False, log_path: Path | str | None = None, extra_args: tuple[str, ...] = (),
                 start_timeout_s: float = 120.0, stop_timeout_s: float = 20.0,
                 tls_cert: Path | str | None = None, tls_key: Path | str | None = None) -> None:
        self.tls_cert = tls_cert  # with tls_key: HTTPS too, on tls_port (oca serve --tls-cert/--tls-key)
        self.tls_key = tls_key
        self.tls_port = 0
        self.root = Path(root).resolve()
        self.workers = workers
        self.sendfile = sendfile
        self.access_log = access_log
        self.extra_args = tuple(extra_args)
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else None
        self.port = 0
        self.admin_port = 0
        self.ready: dict = {}
        self.proc: subprocess.Popen | None = None
        self._keys: Keyring | None = None

    def __enter__(self) -> "OcaProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "oca.cli", "serve", "--dev", str(self.root), "--port", str(self.port)]
        if self.workers is not None:
            cmd += ["--workers", str(self.workers)]
        if not self.sendfile:
            cmd.append("--no-sendfile")
        if not self.access_log:
            cmd.append("--no-access-log")
        if self.tls_cert is not None:
            cmd += ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key), "--tls-port", str(self.tls_port)]
        return cmd + list(self.extra_args)

    def start(self) -> None:
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="oca-test-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self._stdout = open(self.log_path, "wb")
        self._stderr = tempfile.TemporaryFile()
        self.port = free_port()
        self.tls_port = free_port() if self.tls_cert is not None else 0
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._stdout,
                                     stderr=self._stderr, cwd=REPO, env=env, start_new_session=True)
        try:
            self._wait_ready()
            wait_for_port(self.port, self.start_timeout_s, alive=lambda: self.proc.poll() is None)
        except BaseException as exc:
            detail = self.output_tail()
            self.stop()
            raise RuntimeError(f"oca serve did not start: {exc}\n{detail}") from exc
        self._keys = load_keyring(self.root / ".oca" / "keys.toml")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if '"ready"' in line:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("event") == "ready" and event.get("worker") == "supervisor":
                        self.ready = event
                        self.admin_port = int(event.get("admin_port") or 0)
                        if int(event.get("port", self.port)) != self.port:
                            raise RuntimeError(f"serving on port {event['port']}, asked for {self.port}")
                        return
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with code {self.proc.returncode}")
            time.sleep(0.05)
        raise TimeoutError(f"no ready line within {self.start_timeout_s} s")

    def stop(self) -> int | None:
        code = None
        if self.proc is not None:
            code = stop_process(self.proc, timeout_s=self.stop_timeout_s)
            self.proc = None
        for name in ("_stdout", "_stderr"):
            stream = getattr(self, name, None)
            if stream is not None:
                stream.close()
                setattr(self, name, None)
        if self._own_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None
        return code

    # -- facts -----------------------------------------------------------------------------------

    def signed_path(self, key: str, ttl_s: int = 6 * 3600) -> str:
        """`/key?e=..&k=..&c=127.0.0.0/24&s=..`: bound to the loopback client's prefix, as steering
        binds every URL it hands out, so benchmarks measure the check real traffic pays."""
        assert self._keys is not None, "not started"
        return sign_path("/" + key.lstrip("/"), self._keys, int(time.time()) + ttl_s, client_prefix_for("127.0.0.1"))

    def signed_url(self, key: str, ttl_s: int = 6 * 3600) -> str:
        return f"http://127.0.0.1:{self.port}{self.signed_path(key, ttl_s)}"

    @property
    def supervisor_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """The serving workers (the supervisor's fork server's children)."""
        return worker_pids_of(self.supervisor_pid)

    def cpu_seconds(self, include_supervisor: bool = False) -> float:
        pids = self.worker_pids() + ([self.supervisor_pid] if include_supervisor else [])
        return cpu_seconds(pids)

    def output_tail(self, lines: int = 30) -> str:
        text = ""
        if self.log_path is not None and self.log_path.exists():
            text += self.log_path.read_text(errors="replace")
        stderr = getattr(self, "_stderr", None)
        if stderr is not None:
            stderr.seek(0)
            text += stderr.read().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])
