"""uvicorn's httptools protocol with bounds on what one peer can make the server hold.

uvicorn's httptools protocol (the fast one, see docs/dependencies.md) accepts request heads of
any size and any number of headers: ten unfinished 50 MiB headers took a server from 129 to
635 MiB. (``h11_max_incomplete_event_size`` bounds only the slower h11 protocol, and
``limit_concurrency`` refuses requests, not connections: each refused connection still holds
what it sent.) This subclass refuses, with an RFC 9457 problem document and a closed
connection:

* a request line plus headers over ``MAX_HEAD`` bytes, or more than ``MAX_HEADERS``
  header fields: 431 (RFC 6585 section 5), counted as bytes arrive, before the parser has
  buffered more than one read beyond the bound;
* a request (head and body) not complete ``HEAD_TIMEOUT`` seconds after the connection or
  the request began: 408, or a plain close once the answer has begun (a trickled head or a
  stalled body cannot hold a connection slot for ever: uvicorn itself times neither);
* a connection beyond ``max_connections`` (``HTSEC_SERVE_MAX_CONNECTIONS``): 503;
* a malformed request: 400 (uvicorn answers ``text/plain`` there).

The figures are in :mod:`htsec.web.bounds`, beside the bound on bodies.
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from htsec.web.bounds import HEAD_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD, MAX_HEADERS
from htsec.web.problems import problem_body

__all__ = ["BoundedHttpToolsProtocol", "bounded_protocol", "problem_bytes", "run_server"]


def problem_bytes(status: int, detail: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete HTTP/1.1 response carrying a problem document; the connection closes."""
    title = HTTPStatus(status).phrase
    body = json.dumps(problem_body(status, title, detail)).encode()
    lines = [f"HTTP/1.1 {status} {title}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [
        b"content-type: application/problem+json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring; ``max_connections`` is set by :func:`bounded_protocol`."""

    max_connections = MAX_CONNECTIONS
    head_timeout = HEAD_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._header_count = 0
        self._refused = False
        self._refusal: tuple[int, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    # -- refusing ------------------------------------------------------------------------------
    def _refuse(self, status: int, detail: str) -> None:
        if self._refused:
            return
        self._refused = True
        self._cancel_head_timer()
        self.logger.warning("refused a request from %s: %s", self._peer(), detail)
        if not self.transport.is_closing():
            self.transport.write(problem_bytes(status, detail, self.server_state.default_headers))
            self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this for parser errors (and for what a callback below raised)."""
        status, detail = self._refusal or (400, f"malformed HTTP request: {msg}")
        self._refuse(status, detail)

    # -- the head timer ------------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head:
            self._refuse(408, f"the request head did not arrive within {self.head_timeout:.0f} s")
        elif self.pipeline:
            self._arm_head_timer()  # reading is paused behind an earlier request: not its fault
        elif self.cycle is not None and self.cycle.response_started:
            self._refused = True  # an answer is under way: a problem document would corrupt it
            self.logger.warning("closed a connection from %s: slow request body", self._peer())
            self.transport.close()
        else:
            self._refuse(408, f"the request body did not arrive within {self.head_timeout:.0f} s")

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(503, f"more than {self.max_connections} open connections; try again")
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if not self._refused and self._in_head and self._head_bytes > MAX_HEAD:
            self._refuse(431, f"the request line and headers are limited to {MAX_HEAD} bytes")

    # -- parser callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._arm_head_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            # Raising stops the parser; uvicorn turns it into send_400_response.
            self._refusal = (431, f"a request may have at most {MAX_HEADERS} header fields")
            raise ValueError(self._refusal[1])
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False  # the timer runs on until the body is complete
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_head_timer()
        super().on_message_complete()
        self._in_head = True
        self._head_bytes = 0


def bounded_protocol(max_connections: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.run(http=...)`` with this connection bound."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"max_connections": max_connections},
    )


def run_server(
    app: Any,
    *,
    host: str,
    port: int,
    max_connections: int | None,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> None:
    """Serve ``app`` with uvicorn until it is stopped, as every htsec server runs: HTTPS when
    ``certfile`` and ``keyfile`` are given, htsec's logging, no ``Server`` header, the bounded
    protocol (``max_connections``, else :data:`MAX_CONNECTIONS`)."""
    import uvicorn

    from htsec._log import uvicorn_log_config

    uvicorn.run(
        app,
        host=host,
        port=port,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        log_level="info",
        log_config=uvicorn_log_config(),
        access_log=True,
        server_header=False,
        # Bounded heads, header counts and connections, refused as problem documents.
        http=bounded_protocol(max_connections or MAX_CONNECTIONS),
        # Peers are who connects: uvicorn would otherwise believe X-Forwarded-For from
        # 127.0.0.1, and auto-approval rules match on the peer's address.
        proxy_headers=False,
    )
