"""The credmon's token-endpoint client (``credmon.token_client``, on aiohttp) against real
sockets: a scripted server on 127.0.0.1 (tests/credmon/scripted.py; TLS with htsec's own CA
where needed) answers with exact bytes, well-formed and hostile. What is checked: the request
it sends, RFC 9112 framing, keep-alive reuse and expiry, that a request is never retried nor
redirected, bounded responses and no decompression, no cookies or ~/.netrc, timeouts, TLS
checks, the pool bound, environment proxies, and that arbitrary bytes from a server give a
response or a TokenClientError."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import Awaitable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htsec._tls import ensure_tls
from htsec.credmon.token_client import TokenClient, TokenResponse
from htsec.errors import TokenClientError, TokenTimeout
from tests.credmon.scripted import headers_of, replying, response, scripted

FORM = {"grant_type": "refresh_token", "refresh_token": "rt"}


async def post(
    client: TokenClient, url: str, timeout: float = 2.0, **headers: str
) -> TokenResponse:
    sent = {"Authorization": "Basic Y2xpZW50OnNlY3JldA==", **headers}
    return await client.post_form(url, FORM, headers=sent, timeout=timeout)


async def post_once(url: str, timeout: float = 2.0) -> TokenResponse:
    async with TokenClient() as client:
        return await post(client, url, timeout)


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# -- the request and framing -----------------------------------------------------------------
def test_request_bytes_and_json_response() -> None:
    async def main() -> None:
        async with scripted(replying(response())) as (url, seen):
            r = await post_once(url)
        assert r.status == 200
        assert r.json() == {"access_token": "at", "expires_in": 60}
        assert r.headers["content-type"] == "application/json"
        head, _, body = seen.requests[0].partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0] == b"POST /token HTTP/1.1"
        h = headers_of(seen.requests[0])
        assert h[b"host"] == url.split("/")[2].encode()
        assert h[b"authorization"] == b"Basic Y2xpZW50OnNlY3JldA=="
        assert h[b"content-type"] == b"application/x-www-form-urlencoded"
        assert h[b"content-length"] == b"41" and b"transfer-encoding" not in h
        assert h[b"accept"] == b"application/json"
        assert body == b"grant_type=refresh_token&refresh_token=rt"

    run(main())


def test_identity_is_asked_for_whatever_the_caller_says() -> None:
    async def main() -> None:
        async with scripted(replying(response())) as (url, seen), TokenClient() as client:
            await post(client, url, **{"Accept-Encoding": "gzip, br"})
        assert headers_of(seen.requests[0])[b"accept-encoding"] == b"identity"

    run(main())


def test_keep_alive_reuses_one_connection() -> None:
    async def main() -> None:
        async with scripted(replying(response())) as (url, seen), TokenClient() as client:
            for _ in range(5):
                assert (await post(client, url)).status == 200
        assert (len(seen.requests), seen.connections) == (5, 1)

    run(main())


def test_idle_connections_expire() -> None:
    async def main() -> None:
        async with (
            scripted(replying(response())) as (url, seen),
            TokenClient(keepalive_expiry=0.05) as client,
        ):
            await post(client, url)
            await asyncio.sleep(0.3)
            await post(client, url)
        assert seen.connections == 2

    run(main())


def test_connection_close_and_server_side_close_are_honoured() -> None:
    async def main() -> None:
        closing = replying(response(extra=b"Connection: close\r\n"), keep=False)
        async with scripted(closing) as (url, seen), TokenClient() as client:
            await post(client, url)
            await post(client, url)
        assert seen.connections == 2
        # The server closes after answering without saying so: the next request notices the
        # closed connection (its FIN arrived meanwhile) and opens a new one.
        async with (
            scripted(replying(response(), keep=False)) as (url, seen),
            TokenClient() as client,
        ):
            await post(client, url)
            await asyncio.sleep(0.05)
            assert (await post(client, url)).status == 200
        assert seen.connections == 2

    run(main())


def test_chunked_and_close_delimited_bodies() -> None:
    async def main() -> None:
        chunked = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"a":\r\n3\r\n12}\r\n0\r\n\r\n'
        )
        async with (
            scripted(replying(chunked[:30], chunked[30:], delay=0.01)) as (url, _),
            TokenClient() as client,
        ):
            assert (await post(client, url)).json() == {"a": 12}
            assert (await post(client, url)).json() == {"a": 12}
        # RFC 9112 section 6.3: no length and not chunked -- the body ends when the server closes.
        until_close = b'HTTP/1.1 200 OK\r\n\r\n{"b": 1}'
        async with scripted(replying(until_close, keep=False)) as (url, _):
            assert (await post_once(url)).json() == {"b": 1}

    run(main())


def test_errors_and_redirects_are_answered_not_followed() -> None:
    async def main() -> None:
        body = b'{"error":"invalid_grant"}'
        async with scripted(replying(response(body, status="400 Bad Request"))) as (url, _):
            r = await post_once(url)
        assert (r.status, r.json()["error"]) == (400, "invalid_grant")
        # A token endpoint that redirects would have the grant re-posted elsewhere: never.
        for status in ("302 Found", "307 Temporary Redirect", "308 Permanent Redirect"):
            async with scripted(replying(response(b"", status=status))) as (url, seen):
                moved = response(b"", status=status, extra=f"Location: {url}2\r\n".encode())
                seen.requests.clear()
                async with scripted(replying(moved)) as (url2, seen2):
                    r = await post_once(url2)
                assert r.status == int(status[:3]) and r.headers["location"] == url + "2"
                assert len(seen2.requests) == 1 and seen.requests == []

    run(main())


def test_cookies_are_not_kept_between_requests() -> None:
    async def main() -> None:
        answer = response(extra=b"Set-Cookie: session=alice; Path=/\r\n")
        async with scripted(replying(answer)) as (url, seen), TokenClient() as client:
            await post(client, url)
            await post(client, url)
        assert all(b"cookie" not in headers_of(r) for r in seen.requests)

    run(main())


def test_netrc_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Client authentication is the caller's alone (RFC 6749 section 2.3: one method per
    request): a ~/.netrc entry for the token endpoint's host adds nothing."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login mallory password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    async def main() -> None:
        async with scripted(replying(response())) as (url, seen), TokenClient() as client:
            await client.post_form(url, {**FORM, "client_id": "c"}, timeout=2)
            await post(client, url)
        assert b"authorization" not in headers_of(seen.requests[0])
        assert headers_of(seen.requests[1])[b"authorization"] == b"Basic Y2xpZW50OnNlY3JldA=="

    run(main())


# -- faults: never retried, always a TokenClientError ----------------------------------------
def test_close_mid_response_fails_once_without_retry() -> None:
    async def main() -> None:
        partial = response(b"x" * 100)[:-60]
        async with scripted(replying(partial, keep=False)) as (url, seen):
            with pytest.raises(TokenClientError, match="cut the response short"):
                await post_once(url)
        assert len(seen.requests) == 1  # a refresh grant is never sent twice

    run(main())


def test_a_reused_connection_closed_unanswered_is_not_retried() -> None:
    """The provider may have executed the grant before the connection broke: the second
    grant, sent on the kept-alive connection and read but not answered, is not re-sent."""

    async def main() -> None:
        async def answer(n: int, writer: asyncio.StreamWriter) -> bool:
            if n == 1:
                writer.write(response())
                return True
            return False  # read, not answered, closed

        async with scripted(answer) as (url, seen), TokenClient() as client:
            assert (await post(client, url)).status == 200
            with pytest.raises(TokenClientError, match="closed the connection"):
                await post(client, url)
        assert (len(seen.requests), seen.connections) == (2, 1)

    run(main())


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello", "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "malformed"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\n{}\r\n0\r\n\r\n",
            "malformed",
        ),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", "switched protocols"),
        (response(b"\x1f\x8b" + b"\0" * 30, extra=b"Content-Encoding: gzip\r\n"), "compressed"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\n\x1f\r\n0\r\n\r\n",
            "transfer coding",
        ),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 300_000, "malformed"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "malformed"),
        (b"HTTP/1.1 200 " + b"O" * 300_000, "malformed"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 100 + b"\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n" + b"a" * 1_100_000, "too large"),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"a" * 1_100_000, "too large"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n110000\r\n" + b"a" * 1_200_000,
            "too large",
        ),
    ],
    ids=[
        "not-http",
        "two-lengths",
        "repeated-length",
        "negative-length",
        "length-and-chunked",
        "101",
        "gzip",
        "gzip-transfer-coding",
        "endless-header-line",
        "huge-header",
        "endless-status-line",
        "too-many-headers",
        "huge-body",
        "huge-close-delimited-body",
        "huge-chunked-body",
    ],
)
def test_hostile_responses_fail_cleanly(answer: bytes, message: str) -> None:
    async def main() -> None:
        async with scripted(replying(answer)) as (url, _):
            with pytest.raises(TokenClientError, match=message):
                await post_once(url)

    run(main())


@pytest.mark.parametrize("when", ["with-the-answer", "while-idle"])
def test_an_unsolicited_response_is_never_the_next_answer(when: str) -> None:
    """A second response nobody asked for (a confused server or proxy) must not become the
    answer to the next request on that connection: another credential's token. aiohttp
    queues it (aio-libs/aiohttp#13656); the client closes such a connection."""

    async def main() -> None:
        async def answer(n: int, writer: asyncio.StreamWriter) -> bool:
            own = response(b'{"access_token":"for-%d"}' % n)
            extra = response(b'{"access_token":"unsolicited"}') if n == 1 else b""
            if when == "with-the-answer":
                writer.write(own + extra)
            else:
                writer.write(own)
                await writer.drain()
                await asyncio.sleep(0.02)
                writer.write(extra)
            return True

        async with scripted(answer) as (url, seen), TokenClient() as client:
            assert (await post(client, url)).json()["access_token"] == "for-1"
            await asyncio.sleep(0.1)
            assert (await post(client, url)).json()["access_token"] == "for-2"
        assert (seen.connections, len(seen.requests)) == (2, 2)

    run(main())


def test_a_partial_message_after_the_response_does_not_garble_the_next() -> None:
    async def main() -> None:
        stale = response() + b"HTTP/1.1 200 OK\r\nX-Stale: 1\r\n"
        async with scripted(replying(stale)) as (url, _), TokenClient() as client:
            assert (await post(client, url)).status == 200
            await asyncio.sleep(0.05)
            r = await post(client, url)
            assert r.json()["access_token"] == "at" and "x-stale" not in r.headers

    run(main())


def test_timeout_bounds_the_whole_exchange_and_refused_connection() -> None:
    async def main() -> None:
        async def silent(n: int, writer: asyncio.StreamWriter) -> bool:
            await asyncio.sleep(5)
            return False

        async with scripted(silent) as (url, seen):
            with pytest.raises(TokenTimeout):
                await post_once(url, timeout=0.2)
        assert len(seen.requests) == 1
        # A server trickling bytes (each within any per-read timeout) is cut off all the same.
        trickle = replying(*(b"HTTP/1.1 200 OK\r\n", *[b"X: y\r\n"] * 40), delay=0.02)
        async with scripted(trickle) as (url, _):
            with pytest.raises(TokenTimeout):
                await post_once(url, timeout=0.3)
        with pytest.raises(TokenClientError, match="cannot connect"):
            await post_once(url)  # the server is gone

    run(main())


def test_pool_bound_and_waiting_for_a_connection_counts_against_the_timeout() -> None:
    async def main() -> None:
        slow = replying(response(), delay=0.1, before=True)

        async with scripted(slow) as (url, seen), TokenClient(max_connections=2) as client:
            results = await asyncio.gather(*(post(client, url) for _ in range(6)))
            assert [r.status for r in results] == [200] * 6
            assert seen.most_open == 2
            busy = [asyncio.ensure_future(post(client, url)) for _ in range(2)]
            await asyncio.sleep(0.01)
            with pytest.raises(TokenTimeout):
                await post(client, url, timeout=0.03)
            await asyncio.gather(*busy)
        assert len(seen.requests) == 8  # the one that timed out waiting was never sent

    run(main())


def test_unsupported_urls() -> None:
    async def main() -> None:
        for url in ("ftp://127.0.0.1/token", "http:///token", "token"):
            with pytest.raises(TokenClientError, match="unsupported URL"):
                await post_once(url)

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
            async with TokenClient(verify=ca) as client:
                assert (await post(client, url)).status == 200
                assert (await post(client, url)).status == 200
            # The system's CA store does not know htsec's test CA.
            with pytest.raises(TokenClientError, match="TLS"):
                await post_once(url)
        assert seen.connections == 1

    run(main())


def test_tls_checks_the_server_name(tls: tuple[ssl.SSLContext, Path]) -> None:
    server_ctx, ca = tls

    async def main() -> None:
        # 127.0.0.2 is loopback too, but the certificate names only localhost and 127.0.0.1.
        async with (
            scripted(replying(response()), tls=server_ctx, host="127.0.0.2") as (url, _),
            TokenClient(verify=ca) as client,
        ):
            with pytest.raises(TokenClientError, match="TLS"):
                await post(client, url)

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
def test_any_bytes_give_a_response_or_a_token_client_error(answer: bytes, keep: bool) -> None:
    async def main() -> None:
        async with scripted(replying(answer, keep=keep)) as (url, _):
            try:
                r = await post_once(url, timeout=0.3)
            except TokenClientError:
                pass
            else:
                assert 200 <= r.status <= 999
                assert len(r.body) <= len(answer)

    run(main())


# -- proxies -----------------------------------------------------------------------------------
def test_environment_proxy_is_used_unless_bypassed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sites reach their OAuth providers through HTTP(S)_PROXY: the scripted server plays the
    forward proxy and must receive the absolute-form request (RFC 9112 section 3.2.2), with
    the proxy's credentials from its URL."""

    async def main() -> None:
        async with scripted(replying(response())) as (proxy_url, seen):
            proxy = proxy_url.removesuffix("/token").replace("://", "://squid:pw@")
            monkeypatch.setenv("HTTP_PROXY", proxy)
            monkeypatch.setenv("NO_PROXY", "bypassed.example.org")
            async with TokenClient() as client:
                r = await post(client, "http://provider.example.org/oauth/token")
                assert r.json()["access_token"] == "at"
                assert seen.requests[0].startswith(
                    b"POST http://provider.example.org/oauth/token HTTP/1.1\r\n"
                )
                assert headers_of(seen.requests[0])[b"proxy-authorization"] == b"Basic c3F1aWQ6cHc="
                with pytest.raises(TokenClientError, match="cannot connect"):  # NO_PROXY: direct
                    await post(client, "http://bypassed.example.org/token", timeout=2)
            assert len(seen.requests) == 1

    run(main())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_plain_http_to_loopback_never_goes_through_a_proxy(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    """A refresh token may go over plain http only because a loopback endpoint keeps it on
    this host: HTTP_PROXY (without a NO_PROXY for it) must not carry it in clear text to a
    proxy (which would also reach the proxy host's own loopback, another service)."""

    async def main() -> None:
        async with (
            scripted(replying(response())) as (proxy_url, through_proxy),
            scripted(replying(response())) as (url, direct),
        ):
            monkeypatch.setenv("HTTP_PROXY", proxy_url.removesuffix("/token"))
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            async with TokenClient() as client:
                r = await post(client, url.replace("127.0.0.1", host))
                assert r.json()["access_token"] == "at"
            assert through_proxy.requests == []
            assert direct.requests[0].startswith(b"POST /token HTTP/1.1\r\n")

    run(main())


def test_https_goes_through_a_connect_tunnel_verified_end_to_end(
    tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server_ctx, ca = tls
    connects: list[bytes] = []

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        connects.append(head)
        host, _, port = head.split(b" ")[1].decode().rpartition(":")
        up_r, up_w = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except ConnectionError:
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))

    async def main() -> None:
        proxy = await asyncio.start_server(tunnel, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        monkeypatch.setenv("HTTPS_PROXY", f"http://squid:pw@127.0.0.1:{port}")
        try:
            async with scripted(replying(response()), tls=server_ctx) as (url, seen):
                url = url.replace("127.0.0.1", "localhost")
                async with TokenClient(verify=ca) as client:
                    assert (await post(client, url)).json()["access_token"] == "at"
                async with TokenClient() as client:  # the system's CA store: refused
                    with pytest.raises(TokenClientError, match="TLS"):
                        await post(client, url)
        finally:
            proxy.close()
        assert connects[0].startswith(f"CONNECT {url.split('/')[2]} HTTP/1.1\r\n".encode())
        assert headers_of(connects[0])[b"proxy-authorization"] == b"Basic c3F1aWQ6cHc="
        assert seen.requests[0].startswith(b"POST /token HTTP/1.1\r\n")
        assert b"proxy-authorization" not in headers_of(seen.requests[0])

    run(main())


def test_only_http_proxies_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy the client cannot speak to is an error, never a silent direct connection."""
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")

    async def main() -> None:
        with pytest.raises(TokenClientError, match="only http:// proxies"):
            await post_once("https://provider.example.org/token")

    run(main())


# -- the client's own side ---------------------------------------------------------------------
def test_header_injection_is_refused_before_sending() -> None:
    async def main() -> None:
        async with scripted(replying(response())) as (url, seen):
            # A secret read from a file could end in a line break.
            with pytest.raises(TokenClientError, match="line break"):
                await post_once_with(url, {"X-Token": "a\r\nX-Evil: 1"})
        assert seen.requests == []

    async def post_once_with(url: str, headers: dict[str, str]) -> None:
        async with TokenClient() as client:
            await client.post_form(url, FORM, headers=headers)

    run(main())


def test_interim_responses_are_skipped() -> None:
    """RFC 9110 section 15.2: a client must accept 1xx before the final answer -- losing the
    final answer of a rotating refresh grant would burn the credential."""

    async def main() -> None:
        interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        async with scripted(replying(interim, response())) as (url, _), TokenClient() as client:
            r = await post(client, url)
            assert r.json()["access_token"] == "at" and "link" not in r.headers
            assert (await post(client, url)).status == 200

    run(main())


def test_identity_transfer_coding_ends_at_close_and_a_reset_is_an_error() -> None:
    async def main() -> None:
        te = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n{"c": 3}'
        async with scripted(replying(te, keep=False)) as (url, _):
            assert (await post_once(url)).json() == {"c": 3}

        async def reset(n: int, writer: asyncio.StreamWriter) -> bool:
            writer.write(b'HTTP/1.1 200 OK\r\n\r\n{"access_tok')
            await writer.drain()
            await asyncio.sleep(0.05)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST, not FIN: the body is cut, not complete
            return False

        async with scripted(reset) as (url, _):
            with pytest.raises(TokenClientError):
                await post_once(url)

    run(main())


def test_nothing_stays_open_after_aclose() -> None:
    async def main() -> None:
        async with scripted(replying(response())) as (url, seen):
            client = TokenClient()
            await post(client, url)
            await client.aclose()
            await asyncio.sleep(0.05)
            assert seen.open_now == 0  # the kept-alive connection was closed
            with pytest.raises(TokenClientError, match="closed"):
                await post(client, url)
        assert len(seen.requests) == 1

    run(main())
