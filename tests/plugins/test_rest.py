"""htsec.plugins._rest against a hostile server (a real local HTTP server, not a mock): an
endless answer or a compression bomb is cut at the client's limit, a download at the file's
listed size, an endless redirect loop is a readable transfer failure."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from htsec.errors import TransferFailed
from htsec.plugins._rest import Api, Backoff

BOMB = gzip.compress(b"{" + b" " * (32 << 20) + b"}")  # 32 MiB of JSON in 32 KiB


class _Hostile(BaseHTTPRequestHandler):
    sent = 0  # body bytes the last /huge answer got out

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/huge":  # chunked, no length: ends only when the client stops
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b" " * 65536
            _Hostile.sent = 0
            try:
                for _ in range(4096):  # 256 MiB
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                    _Hostile.sent += len(block)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        elif self.path == "/bomb":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(BOMB)))
            self.end_headers()
            self.wfile.write(BOMB)
        else:  # /loop: a redirect to itself, for ever
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture
def hostile() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _api() -> Api:
    return Api("box", lambda: "token-1", backoff=Backoff(attempts=1))


@pytest.mark.parametrize("path", ["/huge", "/bomb"])
def test_send_refuses_an_answer_larger_than_its_limit(hostile: str, path: str) -> None:
    with _api() as api, pytest.raises(TransferFailed, match="larger than 16777216 bytes"):
        api.send("GET", hostile + path, what="listing a folder")


def test_send_reports_an_endless_redirect_loop(hostile: str) -> None:
    with _api() as api, pytest.raises(TransferFailed, match="TooManyRedirects"):
        api.send("GET", hostile + "/loop", what="downloading f", redirects=True)


def test_download_stops_at_the_size_the_provider_listed(hostile: str, tmp_path: Path) -> None:
    with _api() as api, pytest.raises(TransferFailed, match="more than the 10 bytes"):
        api.download(hostile + "/huge", tmp_path / "f", what="downloading f", size=10)
    assert _Hostile.sent < 64 << 20  # not the 256 MiB offered
    assert sorted(p.name for p in tmp_path.iterdir()) == []
