"""A scripted HTTP endpoint for the credmon's tests: a real asyncio server on a loopback
address (TLS with htsec's own CA where asked) that records each request's bytes and answers
with exact bytes, well-formed or hostile -- faults no real provider will produce on demand."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from htsec.credmon.engine import RefreshEngine, RefreshReport
from htsec.credmon.policy import Policy
from htsec.credmon.providers import Provider, ProviderSet
from htsec.creds.store import CredStore

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
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    try:
        return head + await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


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
        except ConnectionError:
            pass
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


def headers_of(request: bytes) -> dict[bytes, bytes]:
    """A recorded request's header fields, names lower-cased (the last of repeated ones)."""
    head = request.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head)}


# -- the refresh engine against a scripted endpoint ----------------------------------------

SECRET = "pool-wide-secret"
FAST = Policy(timeout=2.0, backoff_base=1.0, lease=30)


def provider_set(token_url: str, **kw: object) -> ProviderSet:
    """One provider, ``oidc``, at ``token_url`` with the pool's client secret, no rate limit;
    ``kw`` overrides its fields."""
    p = Provider(
        name="oidc", client_id="pool-client", client_secret=SECRET, token_url=token_url, rate=0
    )
    if kw:
        p = Provider(**{**p.__dict__, **kw})  # type: ignore[arg-type]
    return ProviderSet({"oidc": p}, set())


def refresh_pass(
    creds: CredStore, providers: ProviderSet, policy: Policy = FAST
) -> tuple[RefreshReport, RefreshEngine]:
    engine = RefreshEngine(creds, providers, holder="test", policy=policy)
    return asyncio.run(engine.run_pass()), engine


def serve_and_refresh(
    creds: CredStore, answer: bytes, providers_for: object = None
) -> tuple[RefreshReport, Seen]:
    """One refresh pass against an endpoint answering every request with ``answer``."""

    async def main() -> tuple[RefreshReport, Seen]:
        async with scripted(replying(answer)) as (url, seen):
            providers = providers_for(url) if callable(providers_for) else provider_set(url)
            engine = RefreshEngine(creds, providers, holder="test", policy=FAST)
            return await engine.run_pass(), seen

    return asyncio.run(main())
