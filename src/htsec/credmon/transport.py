"""A lean HTTP/1.1 transport for httpx, used for the credmon's token-endpoint calls.

httpx's default transport (httpcore + h11 + anyio) spends about 0.9 ms of CPU per request on
this machine, which caps one credmon process near 1,000 refreshes per second -- less than
half of what a single node ``oidc-provider`` answers (``bench/credmon.py``). This transport
keeps httpx's API (requests, responses, auth, errors) and replaces the connection handling:
one :class:`asyncio.Protocol` per connection, the C parser ``httptools`` (llhttp, the parser
of Node.js; already installed with uvicorn) for responses, a keep-alive pool per origin.

Deliberately small (RFC 9112, client side, no pipelining, no upgrades):

* Proxies: when the environment names one for an origin (``HTTPS_PROXY``, ``HTTP_PROXY``,
  ``ALL_PROXY``, minus ``NO_PROXY``; read once per origin, as httpx does), that origin's
  requests go through httpx's own transport with that proxy instead.

* A request is never retried: a refresh-token grant may have been executed by the provider
  even if the connection broke afterwards (RFC 6749 section 10.4, rotation). Idle connections
  are dropped after ``keepalive_expiry`` seconds, before servers usually close them (node: 5 s),
  so a request rarely goes out on a connection the server is closing.
* Responses are bounded: ``max_header_bytes`` for the head (counted as bytes arrive, before
  the parser buffers a header), ``max_body_bytes`` for the body (token responses are a few
  kilobytes); beyond that the connection is closed and the request fails with
  :class:`httpx.RemoteProtocolError`. Requests ask for ``Accept-Encoding: identity`` and a
  compressed response is refused: decoding one would undo the body bound (a decompression
  bomb of a few hundred bytes expands to gigabytes).
* Interim 1xx responses (RFC 9110 section 15.2) are skipped; ``101`` and ``HEAD`` requests are
  not supported. The request body is sent with a Content-Length, never chunked.
* TLS: ``verify`` as in httpx (``True``: the system's CA store, a path: that CA bundle, an
  :class:`ssl.SSLContext`, ``False``: no verification, for tests only); the server name is
  checked (``server_hostname``).
* Timeouts come from httpx's ``timeout`` extension (``connect``, ``read``, ``pool``); the read
  timeout bounds the whole response.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import ssl
import time
import urllib.request
from typing import cast

import httptools
import httpx

__all__ = ["LeanTransport"]

_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,20}")  # RFC 9110 section 5.6.2 token
_FRAMING = (b"content-length", b"transfer-encoding")


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one request at a time."""

    def __init__(self, max_header_bytes: int, max_body_bytes: int) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[tuple[int, list[tuple[bytes, bytes]], bytes, bool]] | None
        self._waiter = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._headers_done = False
        self._until_close = False
        self._interim = False
        self._head_bytes = 0
        self._error: str | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports (if a caller runs one) do not derive from asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._headers_done and self._until_close and exc is None:
            # RFC 9112 section 6.3 item 8: no length and not chunked -- the body ends at close.
            self._finish(keep_alive=False)
        else:
            self._fail(httpx.RemoteProtocolError("the server closed the connection mid-response"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # nothing was asked: a confused or hostile server
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            reason = self._error or f"malformed HTTP response: {exc}"
            self._fail(httpx.RemoteProtocolError(reason))
            return
        if not self._headers_done and self._waiter is not None:
            # httptools buffers a header until its line ends: bound what it may hold.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._fail(httpx.RemoteProtocolError("response headers too large"))

    # -- httptools callbacks ----------------------------------------------------------------
    def _reject(self, reason: str) -> None:
        self._error = reason
        raise httptools.HttpParserError(reason)  # httptools reports it as a callback error

    def on_message_begin(self) -> None:
        # Anything after the end of the response makes the connection unusable (no pipelining).
        if self._waiter is None:
            self._reject("data after the end of the response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            self._reject("response headers too large")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status == 101:
            self._reject("the server switched protocols (101), which was not asked for")
        if status < 200:  # interim (100 Continue, 103 Early Hints): the real answer follows
            self._interim = True
            return
        self._headers_done = True
        length = False
        codings = b""
        for name, value in self._headers:
            lname = name.lower()
            if lname == b"content-length":
                length = True
            elif lname == b"transfer-encoding":
                codings = value
            elif lname == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                self._reject(f"compressed response refused (Content-Encoding: {value[:40]!r})")
        # RFC 9112 section 6.3: without a length, and unless chunked is the final transfer
        # coding, the body ends when the server closes the connection.
        last_coding = codings.rsplit(b",", 1)[-1].strip().lower()
        self._until_close = not length and last_coding != b"chunked"

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.max_body_bytes:
            self._reject("response body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._headers, self._header_bytes, self._head_bytes = [], 0, 0
            return
        self._finish(keep_alive=self._parser.should_keep_alive())

    # -- one exchange -----------------------------------------------------------------------
    def _finish(self, *, keep_alive: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            status = self._parser.get_status_code()
            waiter.set_result((status, self._headers, b"".join(self._body), keep_alive))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    async def exchange(self, data: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        assert self.transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self._headers, self._header_bytes, self._body, self._body_bytes = [], 0, [], 0
        self._headers_done, self._error, self._interim, self._head_bytes = False, None, False, 0
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Pool:
    """The connections to one origin: at most ``size`` open, idle ones reused newest first."""

    def __init__(self, size: int) -> None:
        self.idle: collections.deque[_Connection] = collections.deque()
        self.slots = asyncio.Semaphore(size)


class LeanTransport(httpx.AsyncBaseTransport):
    """An :class:`httpx.AsyncBaseTransport` for small request/response exchanges."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | os.PathLike[str] | bool = True,
        max_connections: int = 8,
        keepalive_expiry: float = 2.0,
        max_header_bytes: int = 64 * 1024,
        max_body_bytes: int = 1024 * 1024,
        trust_env: bool = True,
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._pools: dict[tuple[bytes, bytes, int], _Pool] = {}
        self._proxied: dict[tuple[bytes, bytes, int], httpx.AsyncBaseTransport | None] = {}
        self._trust_env = trust_env
        self._closed = False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            verify = self._verify
            if isinstance(verify, ssl.SSLContext):
                self._ssl = verify
            elif verify is False:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                self._ssl = ctx
            elif verify is True:
                self._ssl = ssl.create_default_context()
            else:
                self._ssl = ssl.create_default_context(cafile=os.fspath(verify))
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        if not _METHOD.fullmatch(request.method) or request.method in ("HEAD", "CONNECT"):
            raise httpx.LocalProtocolError(f"method {request.method[:20]!r} is not supported")
        request.headers["Accept-Encoding"] = "identity"
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        port = url.port or (443 if scheme == b"https" else 80)
        key = (scheme, url.raw_host, port)
        if key not in self._proxied:
            self._proxied[key] = self._proxy_transport(url) if self._trust_env else None
        proxied = self._proxied[key]
        if proxied is not None:
            return await self._via_proxy(proxied, request)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(self.max_connections)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        body = await request.aread()
        head = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
                raise httpx.LocalProtocolError(f"line break in the {name!r} header")
            if name.lower() not in _FRAMING:
                head += (name, b": ", value, b"\r\n")
        if body or request.method not in ("GET", "DELETE", "OPTIONS"):
            head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"\r\n")
        data = b"".join(head) + body

        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await pool.slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no free connection within the pool timeout") from None
        try:
            conn = await self._checkout(pool, key, timeouts.get("connect"))
            try:
                async with asyncio.timeout(timeouts.get("read")):
                    status, headers, content, keep_alive = await conn.exchange(data)
            except TimeoutError:
                conn.close()
                raise httpx.ReadTimeout("no complete response within the read timeout") from None
            except BaseException:
                conn.close()
                raise
            if keep_alive and not conn.closed and not self._closed:
                conn.idle_since = time.monotonic()
                pool.idle.append(conn)
            else:
                conn.close()
        finally:
            pool.slots.release()
        return httpx.Response(
            status,
            headers=headers,
            content=content,
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def _via_proxy(
        self, proxied: httpx.AsyncBaseTransport, request: httpx.Request
    ) -> httpx.Response:
        """The same contract as a direct exchange: a bounded body, read in full."""
        response = await proxied.handle_async_request(request)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.stream:  # type: ignore[union-attr]
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise httpx.RemoteProtocolError("response body too large")
                chunks.append(chunk)
        finally:
            await response.aclose()
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            raise httpx.RemoteProtocolError(f"compressed response refused ({encoding[:40]!r})")
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=b"".join(chunks),
            extensions=response.extensions,
            request=request,
        )

    def _proxy_transport(self, url: httpx.URL) -> httpx.AsyncBaseTransport | None:
        proxies = urllib.request.getproxies_environment()
        proxy = proxies.get(url.scheme) or proxies.get("all")
        if not proxy or urllib.request.proxy_bypass(url.host):
            return None
        verify: ssl.SSLContext | bool = (
            self._verify if isinstance(self._verify, bool) else self._ssl_context()
        )
        return httpx.AsyncHTTPTransport(proxy=proxy, verify=verify)

    async def _checkout(
        self, pool: _Pool, key: tuple[bytes, bytes, int], connect_timeout: float | None
    ) -> _Connection:
        deadline = time.monotonic() - self.keepalive_expiry
        while pool.idle:
            conn = pool.idle.pop()
            if conn.closed or conn.idle_since < deadline:
                conn.close()
                continue
            return conn
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        hostname = host.decode("ascii")
        tls = self._ssl_context() if scheme == b"https" else None
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self.max_header_bytes, self.max_body_bytes),
                    hostname,
                    port,
                    ssl=tls,
                    server_hostname=hostname if tls is not None else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"cannot connect to {hostname}:{port} in time") from None
        except ssl.SSLError as exc:
            raise httpx.ConnectError(f"TLS with {hostname}:{port} failed: {exc}") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {hostname}:{port}: {exc}") from None
        return conn

    async def aclose(self) -> None:
        self._closed = True
        for proxied in self._proxied.values():
            if proxied is not None:
                await proxied.aclose()
        self._proxied.clear()
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().close()
        self._pools.clear()

    def __repr__(self) -> str:
        return f"LeanTransport(max_connections={self.max_connections})"
