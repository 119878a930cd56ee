"""Bounds on what one request may make the server hold, and no caching of API answers.

Request heads (line and header fields), the time to send a whole request and the number of
open connections are bounded by the HTTP protocol itself (:mod:`htsec.web.protocol`, with the
figures below); bodies by :class:`BoundBody`, before any handler reads them. Every ``/v1/``
answer is ``Cache-Control: no-store`` (:class:`NoStore`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from htsec.web.problems import problem

__all__ = [
    "HEAD_TIMEOUT",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MAX_HEAD",
    "MAX_HEADERS",
    "BoundBody",
    "NoStore",
]

#: Request bodies, in bytes.
MAX_BODY = 64 * 1024
#: Request line and header fields together, in bytes (an ID token is at most 8 KiB).
MAX_HEAD = 32 * 1024
#: Header fields per request.
MAX_HEADERS = 100
#: Seconds a peer has to send a complete request (head and body).
HEAD_TIMEOUT = 30.0
#: Default bound on open connections (``HTSEC_SERVE_MAX_CONNECTIONS``).
MAX_CONNECTIONS = 1000


class NoStore:
    """Pure ASGI middleware: every ``/v1/`` response is ``Cache-Control: no-store``.

    API answers are per caller and several carry secrets (a collected token, a request's
    one-time secret, an access token); RFC 9111 section 5.2.2.5: a cache MUST NOT store any
    part of such a response. A header the route set itself is kept."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_no_store)


class BoundBody:
    """Pure ASGI middleware refusing bodies over :data:`MAX_BODY` (by Content-Length and by
    what actually arrives, for chunked uploads), before any handler reads them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY):
                await _too_large(scope, receive, send)
                return
        seen = 0
        too_large = answered = False

        async def bounded_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # FastAPI's body parser turns any error while reading into its own 400: once the
            # bound was crossed, whatever the app answers is replaced by the 413.
            nonlocal answered
            if not too_large:
                await send(message)
            elif not answered and message["type"] == "http.response.start":
                answered = True
                await _too_large(scope, receive, send)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except _BodyTooLarge:
            if not answered:
                await _too_large(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    response = problem(413, "Payload Too Large", f"request bodies are limited to {MAX_BODY} bytes")
    await response(scope, receive, send)
