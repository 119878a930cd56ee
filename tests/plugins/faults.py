"""A small HTTPS server that misbehaves on cue, for the faults a real server cannot be told to
produce on a given request: a body cut half way (then, with or without Range support), 429/503
a given number of times with Retry-After, a 401 until the token changes, redirects to another
origin. nginx and XRootD (tests/plugins/nginx.py, tests/xrootd.py) are the real servers of
every other test; this one exists only for these faults and says so in each test.

Paths: ``/cut/<name>`` and ``/cut-norange/<name>`` serve ``files[name]``, cutting the first
response after half the body (the first honours Range afterwards, the second ignores it);
``/busy/<n>/<status>/<name>`` answers ``status`` with ``Retry-After: <retry_after>`` (``1``
unless set) to the first ``n`` requests, then the file; ``/auth/<name>`` wants
``Authorization: Bearer <good_token>``;
``/redirect/<url-encoded target>`` answers 302 to it; ``/echo`` answers 200 ``ok``.
``requests`` records (method, path, headers, time) for each request.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.xrootd import LocalCA


class FaultServer:
    def __init__(self, ca: LocalCA, files: dict[str, bytes]) -> None:
        self.files = files
        self.good_token = ""
        #: The Retry-After of ``/busy``, as sent (each character one byte, latin-1).
        self.retry_after = "1"
        self.requests: list[tuple[str, str, dict[str, str], float]] = []
        self.hits: Counter[str] = Counter()
        self.uploads: dict[str, bytes] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _record(self) -> int:
                server.requests.append(
                    (self.command, self.path, dict(self.headers.items()), time.monotonic())
                )
                server.hits[self.path] += 1
                return server.hits[self.path]

            def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, data: bytes, *, ranges: bool, cut: bool) -> None:
                start = 0
                rng = self.headers.get("Range", "")
                if ranges and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                body = data[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                    self.send_header("ETag", '"v1"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if cut:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.close()
                    return
                self.wfile.write(body)

            def do_GET(self) -> None:
                n = self._record()
                parts = self.path.split("/")
                kind = parts[1] if len(parts) > 1 else ""
                if kind in ("cut", "cut-norange"):
                    data = server.files[parts[2]]
                    self._file(data, ranges=kind == "cut", cut=n == 1)
                elif kind == "busy":
                    count, status, name = int(parts[2]), int(parts[3]), parts[4]
                    if n <= count:
                        self._send(status, b"busy", Retry_After=server.retry_after)
                    else:
                        self._file(server.files[name], ranges=False, cut=False)
                elif kind == "auth":
                    if self.headers.get("Authorization") == f"Bearer {server.good_token}":
                        self._file(server.files[parts[2]], ranges=False, cut=False)
                    else:
                        self._send(401, b"no", WWW_Authenticate="Bearer")
                elif kind == "redirect":
                    self._send(302, b"", Location=urllib.parse.unquote(parts[2]))
                elif kind == "echo":
                    self._send(200, b"ok")
                else:
                    self._send(404, b"not here")

            def do_PUT(self) -> None:
                self._record()
                length = int(self.headers.get("Content-Length", "0"))
                data = self.rfile.read(length)
                server.uploads[self.path] = data
                self._send(201)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        ctx = ca.server_context()
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def headers_for(self, path: str) -> list[dict[str, str]]:
        return [h for _, p, h, _ in self.requests if p == path]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def make_files(tmp: Path) -> dict[str, bytes]:
    return {"big": bytes(range(256)) * 8192, "small": b"hello\n"}
