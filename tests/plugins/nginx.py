"""A real HTTPS server for the plugin tests and bench/transfer.py: Debian's nginx-light, run in
the foreground (``daemon off``) on 127.0.0.1 with everything under a temporary prefix and a
certificate from a throw-away CA (tests/xrootd.py ``make_test_ca``).

It serves ``data`` for GET (with ``Range``) and, through the WebDAV module, PUT; with
``token`` set every request must carry ``Authorization: Bearer <token>`` (else 401), or
``tokens_file`` names a file of accepted tokens (one a line, re-read on reload). Paths
``/status/<code>`` (:data:`STATUSES`) answer that status with ``Retry-After: 1``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.xrootd import LocalCA, make_test_ca

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STATUSES = (400, 401, 403, 404, 429, 500, 502, 503)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Nginx:
    url: str
    port: int
    prefix: Path
    data: Path
    ca: LocalCA
    proc: subprocess.Popen[bytes]

    def log_text(self) -> str:
        log = self.prefix / "error.log"
        return log.read_text(errors="replace") if log.exists() else ""

    def access_log(self) -> list[str]:
        log = self.prefix / "access.log"
        return log.read_text(errors="replace").splitlines() if log.exists() else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _config(prefix: Path, data: Path, ca: LocalCA, port: int, token: str | None) -> str:
    auth = ""
    if token is not None:
        auth = f'if ($http_authorization != "Bearer {token}") {{ return 401; }}'
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / (kind + '_temp')};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    statuses = "\n".join(
        f"        location /status/{code} {{ add_header Retry-After 1 always; return {code}; }}"
        for code in STATUSES
    )
    return f"""\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temp}
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 10000;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {ca.server_cert};
        ssl_certificate_key {ca.server_key};
        root {data};
        client_max_body_size 0;
{statuses}
        location / {{
            {auth}
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""


def start_nginx(tmp: Path, *, token: str | None = None, ca: LocalCA | None = None) -> Nginx:
    """Start nginx serving ``tmp/data`` on a free port; skips when nginx is not installed."""
    if not os.path.exists(NGINX):
        pytest.skip("nginx is not installed: run scripts/setup --test (Debian nginx-light)")
    prefix = tmp / "nginx"
    data = tmp / "data"
    prefix.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    ca = ca or make_test_ca(tmp / "ca")
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_config(prefix, data, ca, port, token))
    proc = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rig = Nginx(f"https://127.0.0.1:{port}", port, prefix, data, ca, proc)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited {proc.returncode}: {rig.log_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return rig
        time.sleep(0.05)
    rig.stop()
    raise RuntimeError(f"nginx did not listen within 15 s: {rig.log_text()[-2000:]}")
