"""What the three provider fakes share: a threaded HTTP/1.1 server on 127.0.0.1 (plain, or
TLS with a test CA's certificate), an item tree
whose file bytes live on disk (a 256 MiB upload costs no memory), bearer-token checks, a
request log, and fault injection.

The real Box, Google Drive and Microsoft Graph services cannot be reached from this machine
(no network, no accounts), so these fakes are the honest substitute: each implements only the
endpoints the plugins use, as the providers' public API documentation describes them (each
endpoint cites its page), and nothing the documentation does not say. What they cannot show
(real throttling, real error bodies, eventual consistency) is listed in docs/plugins.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

BLOCK = 1 << 20


@dataclass
class Item:
    id: str
    name: str
    parent: str | None
    folder: bool
    blob: Path | None = None
    size: int = 0
    digests: dict[str, str] = field(default_factory=dict)
    version: int = 1


@dataclass
class Fault:
    """One injected fault for requests whose ``METHOD path`` matches ``pattern``:
    ``status`` (with ``headers``), ``drop`` (close without answering), or ``cut`` (announce the
    whole body, send ``after`` bytes of it, close). ``times`` requests get it."""

    pattern: str
    action: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    after: int = 0
    times: int = 1


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    port: int
    at: float = field(default_factory=time.monotonic)  # when it arrived


def file_digests(path: Path) -> dict[str, Any]:
    """SHA-1 and MD5 of a file, read in 1 MiB blocks."""
    digests = {"sha1": hashlib.sha1(), "md5": hashlib.md5()}
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            for d in digests.values():
                d.update(block)
    return digests


class Dropped(Exception):
    """The handler closes the connection without an answer."""


class Fake:
    """Server state; a subclass adds ``_route(handler, method, path, query)`` (``route``
    checks the bearer token first)."""

    root_id = "0"

    def __init__(self, workdir: Path, *, tls: ssl.SSLContext | None = None) -> None:
        self.workdir = workdir
        self.scheme = "https" if tls else "http"
        workdir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.tokens: set[str] = {"token-1"}
        self.items: dict[str, Item] = {self.root_id: Item(self.root_id, "", None, True)}
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.on_request: Callable[[Seen], None] | None = None
        self._ids = itertools.count(1000)
        self.api = _Server(self, tls)
        self.content = _Server(self, tls, content_only=True)  # another origin, as CDNs are

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> Fake:
        self.api.start()
        self.content.start()
        return self

    def stop(self) -> None:
        self.api.stop()
        self.content.stop()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.api.port}"

    @property
    def content_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.content.port}"

    # -- the item tree ------------------------------------------------------------------
    def new_id(self) -> str:
        return str(next(self._ids))

    def children(self, parent: str) -> list[Item]:
        return [i for i in self.items.values() if i.parent == parent]

    def child(self, parent: str, name: str) -> Item | None:
        return next((i for i in self.children(parent) if i.name == name), None)

    def lookup(self, path: str) -> Item | None:
        item = self.items[self.root_id]
        for name in [n for n in path.split("/") if n]:
            found = self.child(item.id, name)
            if found is None:
                return None
            item = found
        return item

    def mkdirs(self, path: str) -> Item:
        item = self.items[self.root_id]
        for name in [n for n in path.split("/") if n]:
            found = self.child(item.id, name)
            if found is None:
                found = Item(self.new_id(), name, item.id, True)
                self.items[found.id] = found
            item = found
        return item

    def put_file(self, path: str, data: bytes | Path) -> Item:
        """Test set-up: a file at ``path`` (folders created) with ``data`` or a file's bytes."""
        folder, _, name = path.rpartition("/")
        parent = self.mkdirs(folder)
        item = self.child(parent.id, name) or Item(self.new_id(), name, parent.id, False)
        blob = self.workdir / f"blob-{item.id}-{item.version}"
        if isinstance(data, Path):
            shutil.copyfile(data, blob)
        else:
            blob.write_bytes(data)
        self.set_blob(item, blob)
        self.items[item.id] = item
        return item

    def set_blob(self, item: Item, blob: Path) -> None:
        item.blob, item.size = blob, blob.stat().st_size
        item.digests = {k: d.hexdigest() for k, d in file_digests(blob).items()}

    def read(self, path: str) -> bytes:
        item = self.lookup(path)
        assert item is not None and item.blob is not None, path
        return item.blob.read_bytes()

    def blob_path(self) -> Path:
        return self.workdir / f"upload-{self.new_id()}"

    # -- overridden per provider ---------------------------------------------------------
    def route(self, h: Handler, method: str, path: str, query: dict[str, str]) -> None:
        """A request that passed the faults: the bearer token checked, then :meth:`_route`
        under the lock."""
        if not self.bearer_ok(h):
            h.discard_body()
            self.unauthorized(h)
            return
        with self.lock:
            self._route(h, method, path, query)

    def _route(self, h: Handler, method: str, path: str, query: dict[str, str]) -> None:
        raise NotImplementedError

    def unauthorized(self, h: Handler) -> None:
        h.send_json(401, {"error": "invalid_token"})

    def serve_content(self, h: Handler, item_id: str) -> None:
        item = self.items.get(item_id)
        if item is None or item.blob is None:
            h.send_json(404, {"error": "not found"})
            return
        h.send_file(item.blob, item.size)

    # -- dispatch -----------------------------------------------------------------------
    def fault_for(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and re.search(fault.pattern, f"{method} {path}"):
                    fault.times -= 1
                    return fault
        return None

    def bearer_ok(self, h: Handler) -> bool:
        value = h.headers.get("Authorization", "")
        return value.startswith("Bearer ") and value[7:] in self.tokens


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        seen = Seen(self.command, parts.path, dict(self.headers.items()), self.server.port)
        with fake.lock:
            fake.seen.append(seen)
        if fake.on_request is not None:
            fake.on_request(seen)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        fault = fake.fault_for(self.command, parts.path)
        if fault is not None and fault.action in ("status", "drop"):
            self.discard_body()
            if fault.action == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_json(fault.status, {"error": {"message": "injected"}}, fault.headers)
            return
        self.cut = fault.after if fault is not None and fault.action == "cut" else None
        try:
            if self.server.content_only:
                # Pre-authenticated download URLs: a bearer token sent here is a leak.
                if "Authorization" in self.headers:
                    self.send_json(400, {"error": "bearer token sent to the download host"})
                    return
                fake.serve_content(self, parts.path.rsplit("/", 1)[-1])
            else:
                fake.route(self, self.command, parts.path, query)
        except Dropped:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    # -- request bodies -------------------------------------------------------------------
    def length(self) -> int:
        return int(self.headers.get("Content-Length") or 0)

    def discard_body(self) -> None:
        left = self.length()
        while left > 0:
            left -= len(self.rfile.read(min(BLOCK, left)))

    def body(self, limit: int = 64 << 20) -> bytes:
        n = self.length()
        assert n <= limit, "use body_to_file for large bodies"
        return self.rfile.read(n)

    def json_body(self) -> Any:
        return json.loads(self.body() or b"null")

    def body_to_file(self, path: Path, offset: int = 0) -> int:
        """Write the request body into ``path`` at ``offset``; the bytes received."""
        left, got = self.length(), 0
        with path.open("r+b" if path.exists() else "wb") as f:
            f.seek(offset)
            while left > 0:
                block = self.rfile.read(min(BLOCK, left))
                if not block:
                    raise Dropped
                f.write(block)
                left -= len(block)
                got += len(block)
        return got

    # -- answers ------------------------------------------------------------------------
    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_file(self, blob: Path, size: int) -> None:
        """The bytes of ``blob``, honouring a ``Range: bytes=N-`` (RFC 9110 section 14)."""
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and int(match.group(1)) < size:
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        limit = size - start if self.cut is None else min(self.cut, size - start)
        with blob.open("rb") as f:
            f.seek(start)
            while limit > 0:
                block = f.read(min(BLOCK, limit))
                if not block:
                    break
                self.wfile.write(block)
                limit -= len(block)
        if self.cut is not None:
            raise Dropped


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: Fake
    content_only: bool
    port: int


class _Server:
    def __init__(
        self, fake: Fake, tls: ssl.SSLContext | None, *, content_only: bool = False
    ) -> None:
        self.httpd = _HTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.fake = fake
        self.httpd.content_only = content_only
        self.port = self.httpd.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
