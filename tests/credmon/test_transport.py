"""The credmon's lean HTTP/1.1 transport against real sockets: a scripted asyncio server on
127.0.0.1 (TLS with htsec's own CA where needed) answers with exact bytes, well-formed and
hostile. What is checked: RFC 9112 framing (Content-Length, chunked, close-delimited),
keep-alive reuse and expiry, no retry of a request, bounded responses, timeouts, TLS checks,
the pool bound, and that arbitrary bytes from a server give a response or an httpx error."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htsec._tls import ensure_tls
from htsec.credmon.transport import LeanTransport

OK_JSON = b'{"access_token":"at","expires_in":60}'


def response(body: bytes = OK_JSON, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


@dataclass
class Seen:
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    requests: list[bytes] = field(default_factory=list)


Script = Callable[[int, asyncio.StreamWriter], Awaitable[bool]]


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def scripted(
    answer: Script, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[str, Seen]]:
    """A server that reads each request and lets ``answer(n, writer)`` reply to the n-th one
    (counted over all connections); ``answer`` returns False to close the connection."""
    seen = Seen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        seen.open_now += 1
        seen.most_open = max(seen.most_open, seen.open_now)
        try:
            while (request := await read_request(reader)) is not None:
                seen.requests.append(request)
                if not await answer(len(seen.requests), writer):
                    break
                await writer.drain()
        finally:
            seen.open_now -= 1
            writer.close()

    server = await asyncio.start_server(handle, host, 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://{host}:{port}/token", seen
    finally:
        server.close()


def replying(*chunks: bytes, keep: bool = True, delay: float = 0.0, before: bool = False) -> Script:
    """Answer each request with ``chunks``, ``delay`` seconds apart (``before``: also wait
    that long before the first), then keep the connection open or close it."""

    async def answer(n: int, writer: asyncio.StreamWriter) -> bool:
        if before:
            await asyncio.sleep(delay)
        for i, chunk in enumerate(chunks):
            if i and delay:
                await asyncio.sleep(delay)
            writer.write(chunk)
            await writer.drain()
        return keep

    return answer


async def post(transport: LeanTransport, url: str, timeout: float = 2.0) -> httpx.Response:
    request = httpx.Request(
        "POST",
        url,
        data={"grant_type": "refresh_token", "refresh_token": "rt"},
        headers={"Authorization": "Basic Y2xpZW50OnNlY3JldA=="},
        extensions={"timeout": httpx.Timeout(timeout).as_dict()},
    )
    return await transport.handle_async_request(request)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


# -- framing and keep-alive ------------------------------------------------------------------
def test_request_bytes_and_json_response() -> None:
    async def main() -> None:
        async with scripted(replying(response())) as (url, seen):
            transport = LeanTransport()
            r = await post(transport, url)
            await transport.aclose()
        assert r.status_code == 200
        assert r.json() == {"access_token": "at", "expires_in": 60}
        assert r.headers["content-type"] == "application/json"
        head, _, body = seen.requests[0].partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /token HTTP/1.1"
        assert f"Host: {url.split('/')[2]}".encode() in lines
        assert b"Authorization: Basic Y2xpZW50OnNlY3JldA==" in lines
        assert body == b"grant_type=refresh_token&refresh_token=rt"

    run(main())


def test_keep_alive_reuses_one_connection() -> None:
    async def main() -> None:
        async with scripted(replying(response())) as (url, seen):
            transport = LeanTransport()
            for _ in range(5):
                assert (await post(transport, url)).status_code == 200
            await transport.aclose()
        assert (len(seen.requests), seen.connections) == (5, 1)

    run(main())


def test_idle_connections_expire() -> None:
    async def main() -> None:
        async with scripted(replying(response())) as (url, seen):
            transport = LeanTransport(keepalive_expiry=0.05)
            await post(transport, url)
            await asyncio.sleep(0.15)
            await post(transport, url)
            await transport.aclose()
        assert seen.connections == 2

    run(main())


def test_connection_close_and_server_side_close_are_honoured() -> None:
    async def main() -> None:
        closing = replying(response(extra=b"Connection: close\r\n"), keep=False)
        async with scripted(closing) as (url, seen):
            transport = LeanTransport()
            await post(transport, url)
            await post(transport, url)
        assert seen.connections == 2
        # The server closes after answering without saying so: the next request notices the
        # closed connection (its FIN arrived meanwhile) and opens a new one.
        async with scripted(replying(response(), keep=False)) as (url, seen):
            transport = LeanTransport()
            await post(transport, url)
            await asyncio.sleep(0.05)
            assert (await post(transport, url)).status_code == 200
            await transport.aclose()
        assert seen.connections == 2

    run(main())


def test_chunked_and_close_delimited_bodies() -> None:
    async def main() -> None:
        chunked = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"a":\r\n3\r\n12}\r\n0\r\n\r\n'
        )
        async with scripted(replying(chunked[:30], chunked[30:], delay=0.01)) as (url, _):
            transport = LeanTransport()
            assert (await post(transport, url)).json() == {"a": 12}
            assert (await post(transport, url)).json() == {"a": 12}
            await transport.aclose()
        # RFC 9112 section 6.3: no length and not chunked -- the body ends when the server closes.
        until_close = b'HTTP/1.1 200 OK\r\n\r\n{"b": 1}'
        async with scripted(replying(until_close, keep=False)) as (url, _):
            assert (await post(LeanTransport(), url)).json() == {"b": 1}

    run(main())


def test_errors_are_answered_not_raised() -> None:
    async def main() -> None:
        body = b'{"error":"invalid_grant"}'
        async with scripted(replying(response(body, status="400 Bad Request"))) as (url, _):
            r = await post(LeanTransport(), url)
        assert (r.status_code, r.json()["error"]) == (400, "invalid_grant")

    run(main())


# -- faults: never retried, always an httpx error ----------------------------------------------
def test_close_mid_response_fails_once_without_retry() -> None:
    async def main() -> None:
        partial = response(b"x" * 100)[:-60]
        async with scripted(replying(partial, keep=False)) as (url, seen):
            with pytest.raises(httpx.RemoteProtocolError, match="closed the connection"):
                await post(LeanTransport(), url)
        assert len(seen.requests) == 1  # a refresh grant is never sent twice

    run(main())


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello", "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "malformed"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", "switched protocols"),
        (response(b"\x1f\x8b" + b"\0" * 30, extra=b"Content-Encoding: gzip\r\n"), "compressed"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 300_000, "headers too large"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "headers too large"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + b"a" * 1_100_000, "too large"),
    ],
    ids=[
        "not-http",
        "two-lengths",
        "negative-length",
        "101",
        "gzip",
        "endless-header-line",
        "huge-headers",
        "huge-body",
    ],
)
def test_hostile_responses_fail_cleanly(answer: bytes, message: str) -> None:
    async def main() -> None:
        async with scripted(replying(answer)) as (url, _):
            with pytest.raises(httpx.RemoteProtocolError, match=message):
                await post(LeanTransport(), url)

    run(main())


def test_data_after_the_response_spoils_the_connection() -> None:
    async def main() -> None:
        async with scripted(replying(response() + b"HTTP/1.1 200 OK\r\n")) as (url, seen):
            transport = LeanTransport()
            assert (await post(transport, url)).status_code == 200
            await asyncio.sleep(0.05)
            assert (await post(transport, url)).status_code == 200
            await transport.aclose()
        assert seen.connections == 2

    run(main())


def test_read_timeout_and_refused_connection() -> None:
    async def main() -> None:
        async def silent(n: int, writer: asyncio.StreamWriter) -> bool:
            await asyncio.sleep(5)
            return False

        async with scripted(silent) as (url, seen):
            with pytest.raises(httpx.ReadTimeout):
                await post(LeanTransport(), url, timeout=0.2)
        assert len(seen.requests) == 1
        with pytest.raises(httpx.ConnectError, match="cannot connect"):
            await post(LeanTransport(), url)  # the server is gone

    run(main())


def test_pool_bound_and_pool_timeout() -> None:
    async def main() -> None:
        slow = replying(response(), delay=0.1, before=True)

        async with scripted(slow) as (url, seen):
            transport = LeanTransport(max_connections=2)
            results = await asyncio.gather(*(post(transport, url) for _ in range(6)))
            assert [r.status_code for r in results] == [200] * 6
            assert seen.most_open == 2
            busy = [asyncio.ensure_future(post(transport, url)) for _ in range(2)]
            await asyncio.sleep(0.01)
            request = httpx.Request(
                "POST", url, extensions={"timeout": {"pool": 0.02, "connect": 1, "read": 1}}
            )
            with pytest.raises(httpx.PoolTimeout):
                await transport.handle_async_request(request)
            await asyncio.gather(*busy)
            await transport.aclose()

    run(main())


def test_unsupported_scheme() -> None:
    async def main() -> None:
        with pytest.raises(httpx.UnsupportedProtocol):
            await post(LeanTransport(), "ftp://127.0.0.1/token")

    run(main())


# -- TLS ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    files = ensure_tls(tmp_path_factory.mktemp("tls") / "tls")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.cert, files.key)
    return ctx, files.ca_cert


def test_tls_verified_against_the_given_ca(tls: tuple[ssl.SSLContext, Path]) -> None:
    server_ctx, ca = tls

    async def main() -> None:
        async with scripted(replying(response()), tls=server_ctx) as (url, seen):
            transport = LeanTransport(verify=ca)
            assert (await post(transport, url)).status_code == 200
            assert (await post(transport, url)).status_code == 200
            await transport.aclose()
            # The system's CA store does not know htsec's test CA.
            with pytest.raises(httpx.ConnectError, match="TLS"):
                await post(LeanTransport(), url)
        assert seen.connections == 1

    run(main())


def test_tls_checks_the_server_name(tls: tuple[ssl.SSLContext, Path]) -> None:
    server_ctx, ca = tls

    async def main() -> None:
        # 127.0.0.2 is loopback too, but the certificate names only localhost and 127.0.0.1.
        async with scripted(replying(response()), tls=server_ctx, host="127.0.0.2") as (url, _):
            with pytest.raises(httpx.ConnectError, match="TLS"):
                await post(LeanTransport(verify=ca), url)

    run(main())


# -- anything a server may send ----------------------------------------------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda status, headers, body: (
                b"HTTP/1.1 " + status + b"\r\n" + headers + b"\r\n\r\n" + body
            ),
            st.sampled_from([b"200 OK", b"404 X", b"999 ?", b"20", b""]),
            st.binary(max_size=120),
            st.binary(max_size=120),
        ),
    ),
    st.booleans(),
)
def test_any_bytes_give_a_response_or_an_httpx_error(answer: bytes, keep: bool) -> None:
    async def main() -> None:
        async with scripted(replying(answer, keep=keep)) as (url, _):
            transport = LeanTransport()
            try:
                r = await post(transport, url, timeout=0.3)
            except httpx.HTTPError:
                pass
            else:
                assert 200 <= r.status_code <= 999
                assert len(r.content) <= len(answer)
            await transport.aclose()

    run(main())


# -- proxies -----------------------------------------------------------------------------------
def test_environment_proxy_is_used_unless_bypassed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sites reach their OAuth providers through HTTP(S)_PROXY: the scripted server plays the
    forward proxy and must receive the absolute-form request (RFC 9112 section 3.2.2)."""

    async def main() -> None:
        async with scripted(replying(response())) as (proxy_url, seen):
            proxy = proxy_url.removesuffix("/token")
            monkeypatch.setenv("HTTP_PROXY", proxy)
            monkeypatch.setenv("NO_PROXY", "bypassed.example.org")
            transport = LeanTransport()
            r = await post(transport, "http://provider.example.org/oauth/token")
            assert r.json()["access_token"] == "at"
            assert seen.requests[0].startswith(
                b"POST http://provider.example.org/oauth/token HTTP/1.1\r\n"
            )
            with pytest.raises(httpx.ConnectError):  # NO_PROXY: straight there (no such host)
                await post(transport, "http://bypassed.example.org/token", timeout=2)
            await transport.aclose()
            assert len(seen.requests) == 1

    run(main())


def test_header_injection_is_refused_before_sending() -> None:
    async def main() -> None:
        async with scripted(replying(response())) as (url, seen):
            # httpx.Request keeps a value as given (h11 refuses it later; this transport must
            # too): a secret read from a file could end in a line break.
            request = httpx.Request("POST", url, headers={"X-Token": "a\r\nX-Evil: 1"})
            with pytest.raises(httpx.LocalProtocolError, match="line break"):
                await LeanTransport().handle_async_request(request)
        assert seen.requests == []

    run(main())


def test_interim_responses_are_skipped() -> None:
    """RFC 9110 section 15.2: a client must accept 1xx before the final answer -- losing the
    final answer of a rotating refresh grant would burn the credential."""

    async def main() -> None:
        interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        async with scripted(replying(interim, response())) as (url, _):
            transport = LeanTransport()
            r = await post(transport, url)
            assert r.json()["access_token"] == "at" and "link" not in r.headers
            assert (await post(transport, url)).status_code == 200
            await transport.aclose()

    run(main())


def test_identity_transfer_coding_ends_at_close_and_a_reset_is_an_error() -> None:
    async def main() -> None:
        te = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n{"c": 3}'
        async with scripted(replying(te, keep=False)) as (url, _):
            assert (await post(LeanTransport(), url)).json() == {"c": 3}

        async def reset(n: int, writer: asyncio.StreamWriter) -> bool:
            writer.write(b'HTTP/1.1 200 OK\r\n\r\n{"access_tok')
            await writer.drain()
            await asyncio.sleep(0.05)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST, not FIN: the body is cut, not complete
            return False

        async with scripted(reset) as (url, _):
            with pytest.raises(httpx.RemoteProtocolError):
                await post(LeanTransport(), url)

    run(main())


def test_request_framing_is_the_transports() -> None:
    """Identity encoding asked for; a streamed body goes out with a Content-Length (httpx set
    Transfer-Encoding: chunked for it); methods are RFC 9110 tokens; HEAD is refused."""

    async def main() -> None:
        async def parts() -> AsyncIterator[bytes]:
            yield b"grant_type=refresh_token"
            yield b"&refresh_token=rt"

        async with scripted(replying(response())) as (url, seen):
            transport = LeanTransport()
            request = httpx.Request(
                "POST", url, content=parts(), headers={"Accept-Encoding": "gzip"}
            )
            assert (await transport.handle_async_request(request)).status_code == 200
            head, _, body = seen.requests[0].partition(b"\r\n\r\n")
            lines = [line.lower() for line in head.split(b"\r\n")]
            assert (
                b"content-length: 41" in lines
                and body == b"grant_type=refresh_token&refresh_token=rt"
            )
            assert not any(line.startswith(b"transfer-encoding") for line in lines)
            assert b"accept-encoding: identity" in lines and b"accept-encoding: gzip" not in lines
            for method in ("GET / HTTP/1.1\r\nX-Injected: 1\r\nX:", "HEAD", ""):
                with pytest.raises(httpx.LocalProtocolError, match="not supported"):
                    await transport.handle_async_request(httpx.Request(method, url))
            await transport.aclose()
        assert len(seen.requests) == 1

    run(main())


def test_connections_are_not_pooled_after_aclose() -> None:
    async def main() -> None:
        slow = replying(response(), delay=0.1, before=True)

        async with scripted(slow) as (url, seen):
            transport = LeanTransport()
            pending = asyncio.ensure_future(post(transport, url))
            await asyncio.sleep(0.02)
            await transport.aclose()
            assert (await pending).status_code == 200
            await asyncio.sleep(0.05)
            assert seen.open_now == 0  # the finished connection was closed, not kept

    run(main())
