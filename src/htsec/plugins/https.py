"""The ``https://`` and ``davs://`` plugin (``htsec-plugin-https``): GET to download, PUT to
upload (WebDAV over HTTPS), with a bearer token from ``$_CONDOR_CREDS`` when the URL names one
(``<cred>[.<handle>]+https://host/path`` -> ``<cred>[_<handle>].use``, HTCondor's curl plugin
form), read again before every request.

* Streaming: at most 1 MiB at a time in both directions; aiohttp pauses the socket when
  512 KiB are unread, so memory stays bounded whatever the file size.
* Retries: up to :data:`ATTEMPTS` tries on 429, 5xx, a refused or dropped connection and a
  stalled or cut body, waiting ``Retry-After`` when the server sends one (up to
  :data:`MAX_RETRY_AFTER`; longer is reported as ``Retryable``) or else 1, 2, 4 ... s. A 401
  is tried once more only when the token file changed meanwhile.
* Downloads resume with ``Range`` (and ``If-Range``) after a cut when the server answers 206,
  else start over; they go to a temporary name and are renamed into place when complete.
* Redirects (up to 5) are followed; the token is sent only to the URL's own origin, and never
  over plain http.
* URL paths with ``.``/``..`` segments (also percent-encoded), user info, or no host are
  refused.

The HTTP client is aiohttp: measured beside httpx, urllib3 and http.client it moved a 1 GiB
file from nginx with the least CPU (docs/plugins.md has the figures).
"""

from __future__ import annotations

import os
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from htsec.errors import TransferFailed
from htsec.plugins._rest import retry_after
from htsec.plugins.files import Sink, open_source
from htsec.plugins.protocol import Plugin, Transfer, check_url_path
from htsec.plugins.tokens import read_token, token_name

if TYPE_CHECKING:
    import asyncio

    import aiohttp

# asyncio and aiohttp (about 250 ms of imports) are loaded when the first file moves, not for
# -classad, which the starter runs when the EP starts and before every job.

__all__ = ["ATTEMPTS", "MAX_RETRY_AFTER", "HttpsPlugin", "main"]

ATTEMPTS = 5  # tries per file (HttpsPlugin.attempts)
MAX_RETRY_AFTER = 60.0
CHUNK = 1 << 20  # bytes read from an upload per write
READ_BUFFER = 256 << 10  # aiohttp pauses the socket at twice this much unread
MAX_REDIRECTS = 5
CONNECT_TIMEOUT = 30.0
STALL_TIMEOUT = 60.0  # no byte for this long: the attempt failed
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class _Retry(Exception):
    """One attempt failed in a way another may fix; ``wait`` seconds first (None: back off)."""

    def __init__(self, error: TransferFailed, wait: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait


def _target(url: str) -> tuple[str, str]:
    """``(https URL, host)`` for a plugin URL: the credential prefix dropped, davs -> https."""
    scheme, _, rest = url.partition("://")
    method = scheme.rpartition("+")[2].lower()
    real = f"https://{rest}"
    parts = urllib.parse.urlsplit(real)
    if method not in ("https", "davs"):
        raise TransferFailed(f"not an https or davs URL: {method}://", kind="Parameter")
    if parts.username is not None or parts.password is not None:
        raise TransferFailed("URLs with user info are refused", kind="Parameter")
    if not parts.hostname:
        raise TransferFailed("the URL has no host", kind="Parameter")
    check_url_path(parts.path)
    return real, parts.hostname


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urllib.parse.urlsplit(a), urllib.parse.urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port or 443) == (pb.scheme, pb.hostname, pb.port or 443)


def _ssl_context() -> ssl.SSLContext:
    """The system's CAs (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured), plus ``X509_CERT_DIR``
    as HTCondor's curl plugin does."""
    ctx = ssl.create_default_context()
    capath = os.environ.get("X509_CERT_DIR")
    if capath and os.path.isdir(capath):
        ctx.load_verify_locations(capath=capath)
    return ctx


class HttpsPlugin(Plugin):
    methods = ("https", "davs")
    version = "1.0"
    token_form = "cred"  # noqa: S105 (a naming rule, not a secret)
    attempts = ATTEMPTS

    def __init__(self) -> None:
        self._loop_now: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._loop_now is None:
            import asyncio

            self._loop_now = asyncio.new_event_loop()
        return self._loop_now

    # -- the protocol's two operations ------------------------------------------------------

    def get(self, url: str, path: Path, transfer: Transfer) -> None:
        real, transfer.host = _target(url)
        with Sink(path) as sink:
            self._loop.run_until_complete(self._attempts(url, real, transfer, sink=sink))
            transfer.file_bytes = sink.size
            sink.commit()

    def put(self, path: Path, url: str, transfer: Transfer) -> None:
        real, transfer.host = _target(url)
        source, size = open_source(path)
        with source:
            transfer.file_bytes = size
            self._loop.run_until_complete(
                self._attempts(url, real, transfer, source=source, size=size)
            )

    def close(self) -> None:
        if self._loop_now is None:
            return
        import asyncio

        loop = self._loop_now
        try:
            if self._session is not None:
                loop.run_until_complete(self._session.close())
                # TLS transports finish closing on the next turns of the loop.
                loop.run_until_complete(asyncio.sleep(0.05))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    # -- attempts -------------------------------------------------------------------------

    def _session_now(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=_ssl_context(), limit=4),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=CONNECT_TIMEOUT, sock_read=STALL_TIMEOUT
                ),
                auto_decompress=False,
                read_bufsize=READ_BUFFER,
                trust_env=False,
            )
        return self._session

    async def _attempts(
        self,
        url: str,
        real: str,
        transfer: Transfer,
        *,
        sink: Sink | None = None,
        source: BinaryIO | None = None,
        size: int = 0,
    ) -> None:
        import asyncio

        name = token_name(url, self.token_form)
        resume: dict[str, str] = {}  # the validator of the partial body (ETag, Last-Modified)
        retried_401 = False
        for attempt in range(1, self.attempts + 1):
            token = None if name is None else read_token(name)
            try:
                if sink is not None:
                    await self._get_once(real, token, transfer, sink, resume)
                else:
                    assert source is not None
                    await self._put_once(real, token, transfer, source, size)
                return
            except _Retry as retry:
                err = retry.error
                if err.kind == "Authorization":  # a 401: worth one more try with a new token
                    again = name is not None and not retried_401 and read_token(name) != token
                    retried_401 = True
                    if not again or attempt == self.attempts:
                        raise err from None
                    transfer.attempt_failed(err)
                    continue
                wait = retry.wait if retry.wait is not None else float(min(2 ** (attempt - 1), 30))
                if attempt == self.attempts or wait > MAX_RETRY_AFTER:
                    if wait > MAX_RETRY_AFTER:
                        err.retryable = int(wait)
                    raise err from None
                transfer.attempt_failed(err)
                await asyncio.sleep(wait)

    async def _request(
        self,
        method: str,
        real: str,
        token: str | None,
        transfer: Transfer,
        headers: dict[str, str],
        body: Callable[[], Any] | None = None,
    ) -> aiohttp.ClientResponse:
        """The response to ``method real`` after redirects (the caller releases it); ``body``
        makes a fresh request body for each request sent."""
        import aiohttp

        session = self._session_now()
        target = real
        for _ in range(MAX_REDIRECTS + 1):
            h = dict(headers)
            if token is not None and _same_origin(target, real):
                h["Authorization"] = f"Bearer {token}"
            started = time.monotonic()
            host = urllib.parse.urlsplit(target).hostname or ""
            try:
                resp = await session.request(
                    method,
                    target,
                    headers=h,
                    data=None if body is None else body(),
                    allow_redirects=False,
                )
            except aiohttp.ClientConnectorCertificateError as exc:
                raise TransferFailed(
                    f"TLS certificate of {host} not trusted: {exc.certificate_error}",
                    kind="Authorization",
                    server=host,
                    failure_type="Authentication",
                ) from None
            except aiohttp.ClientConnectorDNSError:
                raise _Retry(
                    TransferFailed(f"cannot resolve {host}", kind="Resolution", server=host)
                ) from None
            except (aiohttp.ClientConnectorError, aiohttp.ClientConnectionError) as exc:
                raise _Retry(
                    TransferFailed(f"cannot connect to {host}: {exc}", kind="Contact", server=host)
                ) from None
            except TimeoutError:
                raise _Retry(
                    TransferFailed(f"no answer from {host}", kind="Contact", server=host)
                ) from None
            transfer.connection_time += time.monotonic() - started
            transfer.developer["TransferHTTPStatusCode"] = resp.status
            if resp.status not in (301, 302, 303, 307, 308) or "Location" not in resp.headers:
                return resp
            location = urllib.parse.urljoin(target, resp.headers["Location"])
            resp.release()
            if urllib.parse.urlsplit(location).scheme != "https":
                raise TransferFailed(
                    f"{host} redirected to a non-https URL: refused", kind="Specification"
                )
            if method == "PUT" and resp.status in (301, 302, 303):
                raise TransferFailed(
                    f"{host} redirected a PUT with {resp.status}: refused", kind="Specification"
                )
            check_url_path(urllib.parse.urlsplit(location).path)
            target = location
        raise TransferFailed(f"more than {MAX_REDIRECTS} redirects", kind="Specification")

    @staticmethod
    def _status_error(resp: aiohttp.ClientResponse, what: str) -> Exception:
        host = resp.url.host or ""
        status = resp.status
        reason = f"{what}: HTTP {status} {resp.reason or ''}".rstrip()
        if status == 401:
            return _Retry(
                TransferFailed(
                    f"{reason} (the token was refused or missing)",
                    kind="Authorization",
                    server=host,
                    failure_type="Authentication",
                    should_refresh=True,
                    error_code=status,
                )
            )
        if status == 403:
            return TransferFailed(
                f"{reason} (the token does not grant this)",
                kind="Authorization",
                server=host,
                failure_type="Authorization",
                error_code=status,
            )
        if status in _RETRY_STATUS:
            wait = retry_after(resp.headers.get("Retry-After"))
            return _Retry(
                TransferFailed(reason, kind="Transfer", server=host, error_code=status), wait
            )
        return TransferFailed(reason, kind="Specification", server=host, error_code=status)

    async def _get_once(
        self, real: str, token: str | None, transfer: Transfer, sink: Sink, resume: dict[str, str]
    ) -> None:
        """One GET, resuming from ``sink.size`` when it is not 0 and ``resume`` holds the
        validator of what is there (set here from each 200's strong ETag or Last-Modified)."""
        import aiohttp

        headers = {"Accept-Encoding": "identity"}
        offset = sink.size
        validator = resume.pop("validator", None)
        if offset and validator:
            headers |= {"Range": f"bytes={offset}-", "If-Range": validator}
        elif offset:
            sink.restart(0)
            offset = 0
        resp = await self._request("GET", real, token, transfer, headers)
        try:
            if resp.status == 416 and offset:
                sink.restart(0)
                raise _Retry(TransferFailed("the server refused to resume"), 0.0)
            if resp.status not in (200, 206):
                raise self._status_error(resp, f"GET {resp.url.host}")
            start = 0
            if resp.status == 206:
                crange = resp.headers.get("Content-Range", "")
                unit, _, spec = crange.partition(" ")
                start = int(spec.split("-", 1)[0]) if spec[:1].isdigit() else -1
                if unit != "bytes" or start != offset:
                    sink.restart(0)
                    raise _Retry(TransferFailed("the server resumed at the wrong place"), 0.0)
            elif offset:
                sink.restart(0)
            new = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
            ranges = resp.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
            if new and not new.startswith("W/") and (ranges or resp.status == 206):
                resume["validator"] = new  # (a weak validator cannot guard a Range request)
            expected = resp.content_length
            got = 0
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    sink.write(chunk)
                    got += len(chunk)
                    transfer.total_bytes += len(chunk)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError):
                got = -1
            if got < 0 or (expected is not None and got != expected):
                raise _Retry(
                    TransferFailed(
                        f"the connection to {resp.url.host} dropped after {sink.size} bytes",
                        kind="Transfer",
                        server=resp.url.host or "",
                    )
                )
        finally:
            resp.release()

    async def _put_once(
        self, real: str, token: str | None, transfer: Transfer, source: BinaryIO, size: int
    ) -> None:
        async def body() -> AsyncIterator[bytes]:
            source.seek(0)
            left = size
            while left > 0:
                chunk = source.read(min(CHUNK, left))
                if not chunk:
                    raise TransferFailed(f"{transfer.path} shrank while it was uploaded")
                left -= len(chunk)
                transfer.total_bytes += len(chunk)
                yield chunk

        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        resp = await self._request("PUT", real, token, transfer, headers, body)
        try:
            if resp.status not in (200, 201, 204):
                raise self._status_error(resp, f"PUT {resp.url.host}")
        finally:
            resp.release()


def main() -> int:
    """The ``htsec-plugin-https`` console script."""
    return HttpsPlugin.main()


if __name__ == "__main__":
    raise SystemExit(main())
