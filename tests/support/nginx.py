"""A real nginx serving a directory, the oracle for the appliance's HTTP behaviour and its benchmark.

The config is generated into a temporary prefix (conf, pid file, error log, temp paths), so nothing
outside it is touched: `nginx -p PREFIX -c PREFIX/nginx.conf -e PREFIX/error.log -g 'daemon off;'`.
It is a plain static-file server — sendfile, tcp_nopush, long keep-alive — listening on 127.0.0.1
only. Use it as a context manager:

    with NginxServer(root) as ngx:
        http.client.HTTPConnection("127.0.0.1", ngx.port)
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.support import children_of, cpu_seconds, free_port, stop_process, wait_for_port

NGINX = os.environ.get("NGINX_BIN") or shutil.which("nginx") or "/usr/sbin/nginx"

# The appliance's own table (oca/http/files.py) for what tests and benchmarks serve.
TYPES = {
    "video/mp4": "mp4 m4s m4v",
    "audio/mp4": "m4a",
    "video/mp2t": "ts",
    "application/vnd.apple.mpegurl": "m3u8",
    "application/dash+xml": "mpd",
}

CONF = """\
{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    types {{
{types}
    }}
    default_type application/octet-stream;
    sendfile {sendfile};
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 75s;
    server_tokens off;
    access_log {access_log};
    open_file_cache {open_file_cache};
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    server {{
        listen 127.0.0.1:{port}{reuseport}{ssl};
        server_name localhost;
{ssl_lines}        root {root};
        location / {{
        }}
    }}
}}
"""


class NginxServer:
    """nginx over `root` on a free 127.0.0.1 port.

    workers: "auto" or a number. access_log: None (off) or a file path; written with a 64 KiB buffer
    flushed every second, so it costs what a batched log costs. open_file_cache: an nginx value such
    as "max=1000" (off by default: stock nginx). reuseport: one listening socket per worker.
    """

    def __init__(self, root: Path | str, *, workers: int | str = "auto", access_log: Path | str | None = None,
                 sendfile: bool = True, open_file_cache: str = "off", reuseport: bool = False,
                 start_timeout_s: float = 15.0, ssl_cert: Path | str | None = None, ssl_key: Path | str | None = None,
                 ssl_ciphers: str | None = None) -> None:
        self.ssl_cert = ssl_cert  # with ssl_key: HTTPS (TLS 1.2 and 1.3) on the port instead of HTTP
        self.ssl_key = ssl_key
        self.ssl_ciphers = ssl_ciphers
        self.root = Path(root).resolve()
        self.workers = workers
        self.access_log = access_log
        self.sendfile = sendfile
        self.open_file_cache = open_file_cache
        self.reuseport = reuseport
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self.prefix: Path | None = None
        self.proc: subprocess.Popen | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> "NginxServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def config_text(self) -> str:
        assert self.prefix is not None
        log = "off" if self.access_log is None else f"{self.access_log} combined buffer=64k flush=1s"
        types = "\n".join(f"        {mime} {exts};" for mime, exts in TYPES.items())
        return CONF.format(
            user="user root;\n" if os.geteuid() == 0 else "",  # else workers drop to nobody: no 0700 temp dirs
            workers=self.workers, prefix=self.prefix, types=types, sendfile="on" if self.sendfile else "off",
            access_log=log, open_file_cache=self.open_file_cache, port=self.port,
            reuseport=" reuseport" if self.reuseport else "", root=self.root,
            ssl=" ssl" if self.ssl_cert else "", ssl_lines=self._ssl_lines(),
        )

    def _ssl_lines(self) -> str:
        if not self.ssl_cert:
            return ""
        lines = [f"ssl_certificate {self.ssl_cert};", f"ssl_certificate_key {self.ssl_key};",
                 "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_session_cache shared:SSL:10m;"]
        if self.ssl_ciphers:
            lines.append(f"ssl_ciphers {self.ssl_ciphers};")
        return "".join(f"        {line}\n" for line in lines)

    def start(self) -> None:
        self.prefix = Path(tempfile.mkdtemp(prefix="nginx-test-"))
        (self.prefix / "tmp").mkdir()
        self.port = free_port()
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.config_text())
        cmd = [NGINX, "-p", str(self.prefix), "-c", str(conf), "-e", str(self.prefix / "error.log"),
               "-g", "daemon off;"]
        self._stderr = open(self.prefix / "stderr.log", "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._stderr, stderr=self._stderr,
                                     start_new_session=True)
        try:
            wait_for_port(self.port, self.start_timeout_s, alive=lambda: self.proc.poll() is None)
        except BaseException as exc:
            log = self.error_log_tail()
            self.stop()
            raise RuntimeError(f"nginx did not start: {exc}\n{log}") from exc

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, signal.SIGQUIT)  # graceful: finish requests in flight
            self.proc = None
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
            self._stderr = None
        if self.prefix is not None:
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = None

    # -- facts -----------------------------------------------------------------------------------

    @property
    def master_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return children_of(self.master_pid)

    def cpu_seconds(self, include_master: bool = False) -> float:
        pids = self.worker_pids() + ([self.master_pid] if include_master else [])
        return cpu_seconds(pids)

    def url(self, key: str) -> str:
        return f"{'https' if self.ssl_cert else 'http'}://127.0.0.1:{self.port}/{key}"

    def error_log_tail(self, lines: int = 20) -> str:
        if self.prefix is None:
            return ""
        text = ""
        for name in ("stderr.log", "error.log"):
            try:
                text += (self.prefix / name).read_text(errors="replace")
            except OSError:
                pass
        return "\n".join(text.splitlines()[-lines:])
