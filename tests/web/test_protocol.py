"""Bounds on what one peer can make 'htsec serve' hold (htsec.web.protocol): request heads, header
counts, connections and slow heads are refused with problem documents. Real servers and raw
TLS sockets: the attacks are byte streams no HTTP client library would send."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from htsec.web.bounds import MAX_HEAD, MAX_HEADERS
from htsec.web.protocol import bounded_protocol
from tests.conftest import free_port, run, serving


@pytest.fixture
def served(home: Path) -> Iterator[tuple[int, ssl.SSLContext]]:
    assert run("key", "create", "POOL").code == 0
    with serving(home, {"_CONDOR_HTSEC_SERVE_MAX_CONNECTIONS": "8"}) as env:
        port = int(env["_CONDOR_HTSEC_SERVER_URL"].rsplit(":", 1)[1])
        yield port, ssl.create_default_context(cafile=str(home / "tls" / "ca.pem"))


def _connect(port: int, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    return ctx.wrap_socket(raw, server_hostname="127.0.0.1")


def _response(sock: ssl.SSLSocket, data: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            length = [ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")]
            if sep and length and len(body) >= int(length[0].split(b":")[1]):
                break
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), data[:200]
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def _early_answer(sock: ssl.SSLSocket) -> bytes:
    """Application data the server has sent already ("readable" alone may be a TLS 1.3
    session ticket)."""
    if not select.select([sock], [], [], 0)[0]:
        return b""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except ssl.SSLWantReadError:
        return b""
    except OSError:
        return b""
    finally:
        sock.settimeout(20)


def _send_until_answered(sock: ssl.SSLSocket, head: bytes, total: int) -> tuple[int, bytes]:
    """Send ``head`` then filler bytes of an unfinished header, up to ``total``, stopping as
    soon as the server answers; returns how much was sent and what was answered so far."""
    sock.sendall(head)
    sent, chunk = len(head), b"a" * 65536
    while sent < total:
        if answer := _early_answer(sock):
            return sent, answer
        try:
            sock.sendall(chunk)
        except OSError:
            break
        sent += len(chunk)
    return sent, b""


def _assert_problem(status: int, headers: dict[str, str], body: bytes, expect: int) -> dict:
    assert status == expect, body
    assert headers["content-type"] == "application/problem+json"
    doc = json.loads(body)
    assert doc["status"] == expect and doc["detail"]
    return doc


def test_ten_megabyte_header_refused(served: tuple[int, ssl.SSLContext]) -> None:
    port, ctx = served
    with _connect(port, ctx) as sock:
        head = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
        sent, early = _send_until_answered(sock, head, 10 * 1024 * 1024)
        doc = _assert_problem(*_response(sock, early), 431)
    # Answered long before the header could end (the rest sat in the sockets' buffers).
    assert sent < 10 * 1024 * 1024 and str(MAX_HEAD) in doc["detail"]


def test_too_many_header_fields_refused(served: tuple[int, ssl.SSLContext]) -> None:
    port, ctx = served
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
    with _connect(port, ctx) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + fields + b"\r\n")
        _assert_problem(*_response(sock), 431)
    with _connect(port, ctx) as sock:  # a normal request still works
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert _response(sock)[0] == 200


def test_malformed_request_is_a_problem_document(served: tuple[int, ssl.SSLContext]) -> None:
    port, ctx = served
    with _connect(port, ctx) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nBad Header Line\r\n\r\n")
        _assert_problem(*_response(sock), 400)


def _listener_pid(port: int) -> int:
    inode = next(
        f[9]
        for f in (ln.split() for ln in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if f[3] == "0A" and int(f[1].split(":")[1], 16) == port
    )
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
    raise AssertionError(f"no process listens on {port}")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_unfinished_big_heads_do_not_balloon_memory(served: tuple[int, ssl.SSLContext]) -> None:
    """Six connections each sending up to 20 MiB of one unfinished header, all kept open:
    the server's resident memory grows by a few MiB, not by 120."""
    port, ctx = served
    pid = _listener_pid(port)
    before = _rss_mib(pid)
    socks = [_connect(port, ctx) for _ in range(6)]
    try:
        for sock in socks:
            _send_until_answered(sock, b"GET / HTTP/1.1\r\nX-Big: ", 20 * 1024 * 1024)
        time.sleep(1)  # what is still in the sockets' buffers reaches the server
        grown = _rss_mib(pid) - before
    finally:
        for sock in socks:
            sock.close()
    assert grown < 20, f"server RSS grew by {grown:.0f} MiB"


def test_connections_bounded(served: tuple[int, ssl.SSLContext]) -> None:
    """HTSEC_SERVE_MAX_CONNECTIONS = 8: a ninth open connection gets 503; once one closes,
    a new one is served."""
    port, ctx = served
    held = [_connect(port, ctx) for _ in range(8)]
    try:
        time.sleep(0.2)
        with _connect(port, ctx) as extra:
            extra.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            _assert_problem(*_response(extra), 503)
        held.pop().close()
        time.sleep(0.2)
        with _connect(port, ctx) as again:
            again.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _response(again)[0] == 200
    finally:
        for sock in held:
            sock.close()


@contextlib.contextmanager
def _threaded_server(settings: object, authority: object, timeout: float) -> Iterator[int]:
    """uvicorn in a thread, plain HTTP, the bounded protocol with a ``timeout`` s request
    timeout; yields its port."""
    import uvicorn

    from htsec.server import create_app

    protocol = bounded_protocol(8)
    protocol.head_timeout = timeout
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, authority),  # type: ignore[arg-type]
        host="127.0.0.1",
        port=port,
        http=protocol,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_slow_head_times_out(settings: object, authority: object) -> None:
    """A head trickled byte by byte is cut off after the timeout with 408."""
    with _threaded_server(settings, authority, 1.0) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            start = time.monotonic()
            with contextlib.suppress(OSError):
                for byte in b"GET /v1/health HTTP/1.1\r\nX-Slow: ":
                    sock.sendall(bytes([byte]))
                    time.sleep(0.1)
            data = sock.recv(65536)
            assert time.monotonic() - start < 8
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert b"application/problem+json" in data


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickled"])
def test_slow_body_times_out(settings: object, authority: object, trickle: bool) -> None:
    """A complete head whose body never completes (stalled, or a byte at a time) cannot hold
    its connection slot: the whole request has the timeout, not only its head."""
    head = b"POST /v1/token-requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    with _threaded_server(settings, authority, 1.0) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            start = time.monotonic()
            sock.sendall(head + b"Content-Length: 1000\r\n\r\n{")
            data = b""
            with contextlib.suppress(OSError):
                while time.monotonic() - start < 6:
                    if trickle:
                        sock.sendall(b" ")
                    if select.select([sock], [], [], 0.1)[0]:
                        chunk = sock.recv(65536)
                        if not chunk:
                            break
                        data += chunk
            assert time.monotonic() - start < 5, "the connection was held"
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert b"application/problem+json" in data
