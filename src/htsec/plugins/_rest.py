"""The REST client the cloud plugins (Box, Google Drive, OneDrive) share.

What each of their transfers needs from HTTP, written once:

- the bearer token is read again before every request (the starter replaces the ``.use`` file
  while the job runs; FORMATS.md section 6), and a 401 waits a short while for a replaced file
  before it gives up;
- 429 and 5xx answers and dropped connections are retried with exponential back-off, honouring
  ``Retry-After`` (RFC 9110 section 10.2.3: seconds or an HTTP date);
- downloads stream into a hidden temporary file beside the target, resume with ``Range`` after
  a dropped connection (RFC 9110 section 14), are checked against the provider's size and
  digest, and only then take the target's name: a partial file never looks complete;
- uploads are read from the file in blocks of at most 1 MiB (``os.pread``), so memory stays
  bounded whatever the size of a chunk or part.

Every failure is a :class:`TransferFailed` whose message a person can act on; provider error
text is cut short and stripped of control characters, tokens never appear in it.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import os
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from htsec.errors import TransferFailed
from htsec.plugins.files import Sink

if TYPE_CHECKING:
    import httpx  # imported when the first request is made: -classad runs without it

__all__ = [
    "Api",
    "Backoff",
    "Moved",
    "file_blocks",
]

#: Statuses worth another try: too many requests, and the server-side failures that are usually
#: passing (Box, Google and Microsoft all document retrying these with back-off).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BLOCK = 1 << 20
#: The largest answer read into memory (metadata, listings, errors); file bytes are streamed.
MAX_BODY = 16 << 20


@dataclass(frozen=True)
class Moved:
    """What a finished transfer moved: bytes, and the host that served them."""

    bytes: int
    host: str


@dataclass(frozen=True)
class Backoff:
    """Retry policy: ``attempts`` tries in all, waits ``base * 2**n`` (jittered, at most
    ``cap`` seconds) unless the server sent ``Retry-After`` (honoured up to ``retry_after_cap``;
    a longer one ends the file's transfer with ``Retryable`` set, for HTCondor to schedule, as
    the https plugin does); after a 401, up to ``token_grace`` seconds for the ``.use`` file to
    be replaced."""

    attempts: int = 6
    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 60.0
    token_grace: float = 5.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            after = retry_after(response.headers.get("retry-after"))
            if after is not None:
                return min(after, self.retry_after_cap)
        wait: float = min(self.cap, self.base * (2**attempt))
        return wait * (0.5 + random.random() / 2)  # noqa: S311 -- jitter, not a secret


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def file_blocks(fd: int, offset: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of the open file ``fd`` from ``offset``, in blocks of at most 1 MiB."""
    end = offset + length
    while offset < end:
        block = os.pread(fd, min(BLOCK, end - offset), offset)
        if not block:
            raise TransferFailed("the file being uploaded shrank while it was read")
        offset += len(block)
        yield block


def _clean(text: str, limit: int = 200) -> str:
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(response: httpx.Response) -> str:
    """The provider's own words for a failed answer (Box ``message``, Google and Microsoft
    ``error.message``), or the reason phrase."""
    import httpx

    detail = ""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError, httpx.ResponseNotRead):
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            detail = str(error.get("message") or error.get("code") or "")
        elif isinstance(body.get("message"), str):
            detail = str(body.get("message"))
            if isinstance(body.get("code"), str):
                detail = f"{body['code']}: {detail}"
        elif isinstance(error, str):
            detail = str(body.get("error_description") or error)
    return f"{response.status_code} {response.reason_phrase}" + (
        f" ({_clean(detail)})" if detail else ""
    )


_HINTS = {
    401: ("Authorization", "the access token was refused: expired, revoked or for another service"),
    403: ("Authorization", "the token's user may not do this"),
    404: ("Specification", "not found"),
}


@dataclass
class Api:
    """One provider's HTTP client for one plugin run.

    ``token`` returns the current access token (it reads the ``.use`` file each time).
    Plain HTTP to loopback never goes through a proxy from the environment (the test fakes).
    """

    name: str
    token: Callable[[], str]
    backoff: Backoff = field(default_factory=Backoff)
    timeout: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    #: Told of every failed attempt that is retried (for the result ad's TransferErrorData).
    on_retry: Callable[[TransferFailed], None] = lambda failure: None
    max_body: int = MAX_BODY
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        import httpx

        self.client = httpx.Client(
            timeout=httpx.Timeout(self.timeout, connect=15.0),
            follow_redirects=False,
            headers={"User-Agent": "htsec-plugin"},
            mounts={
                f"all://{host}": httpx.HTTPTransport()
                for host in ("127.0.0.1", "localhost", "[::1]")
            },
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _await_new_token(self, refused: str) -> bool:
        """After a 401: wait up to ``token_grace`` s for the ``.use`` file to hold another
        token (the starter replaces it when the credmon refreshes)."""
        deadline = time.monotonic() + self.backoff.token_grace
        while True:
            with contextlib.suppress(TransferFailed):
                if self.token() != refused:
                    return True
            if time.monotonic() >= deadline:
                return False
            self.sleep(0.2)

    def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        content: Callable[[], Iterator[bytes]] | bytes | None = None,
        files: Callable[[], Any] | None = None,
        data: Mapping[str, str] | None = None,
        bearer: bool = True,
        stream: bool = False,
        redirects: bool = False,
        ok: Callable[[int], bool] = lambda status: status < 300,
        attempts: int | None = None,
    ) -> httpx.Response:
        """Send one request, retrying as :class:`Backoff` says; return the first answer
        ``ok`` accepts (streamed: the caller closes it), or raise :class:`TransferFailed`
        naming ``what`` was being done.

        ``content`` and ``files`` are factories, called again for each try, so a body read
        from a file is re-read from its start after a failure. ``attempts`` overrides the
        policy's count (1: the caller recovers itself, as resumable uploads do).
        """
        import httpx

        limit = self.backoff.attempts if attempts is None else attempts
        attempt = 0
        token_swaps = 0
        while True:
            sent_token = ""
            hdrs = dict(headers or {})
            if bearer:
                sent_token = self.token()
                hdrs["Authorization"] = f"Bearer {sent_token}"
            body = content() if callable(content) else content
            request = self.client.build_request(
                method,
                url,
                params=params,
                headers=hdrs,
                json=json,
                content=body,
                files=files() if files else None,
                data=data,
            )
            response: httpx.Response | None = None
            try:
                response = self.client.send(request, stream=True, follow_redirects=redirects)
                status = response.status_code
                if ok(status) and stream:
                    return response
                try:
                    _read_bounded(response, self.max_body, f"{self.name}: {what}")
                finally:
                    response.close()
                if ok(status):
                    return response
            except (httpx.TooManyRedirects, httpx.DecodingError) as err:
                raise TransferFailed(
                    f"{self.name}: {what}: {type(err).__name__}: {_clean(str(err))}",
                    server=request.url.host,
                ) from None
            except httpx.TransportError as err:
                response = None
                failure = f"{type(err).__name__}: {_clean(str(err)) or 'connection failed'}"
            else:
                failure = describe(response)
                renewed = status == 401 and bearer and token_swaps < 3
                if renewed and self._await_new_token(sent_token):
                    token_swaps += 1
                    continue
                if status not in RETRY_STATUSES:
                    kind, hint = _HINTS.get(status, ("Transfer", ""))
                    raise TransferFailed(
                        f"{self.name}: {what}: {failure}" + (f"; {hint}" if hint else ""),
                        kind=kind,
                        server=request.url.host,
                        should_refresh=status == 401,
                        error_code=status,
                    )
            attempt += 1
            after = None if response is None else retry_after(response.headers.get("retry-after"))
            too_long = after is not None and after > self.backoff.retry_after_cap
            if too_long:
                failure += f" (the service asks to wait {int(after or 0)} s: not waited here)"
            elif attempt > 1 and attempt >= limit:
                failure += f" (gave up after {attempt} tries)"
            error = TransferFailed(
                f"{self.name}: {what}: {failure}",
                kind="Transfer" if response is not None else "Contact",
                server=request.url.host,
                error_code=response.status_code if response is not None else 1,
                # Seconds the service asked for: for HTCondor when too long to wait here, and
                # for a caller that resumes the step itself (see resume_after).
                retryable=None if after is None else int(after) + 1 if too_long else ceil(after),
            )
            if too_long or attempt >= limit:
                raise error
            self.on_retry(error)
            self.sleep(self.backoff.delay(attempt - 1, response))

    def resume_after(self, err: TransferFailed, failures: int) -> None:
        """For a step its caller resumes itself (sent with ``attempts=1``, as resumable
        uploads are): after the ``failures``-th failure ``err``, wait as :class:`Backoff` says
        (the service's ``Retry-After`` first), or raise ``err`` when another try is not worth it
        (a status outside :data:`RETRY_STATUSES`, or tries used up)."""
        if err.error_code != 1 and err.error_code not in RETRY_STATUSES:
            raise err
        if failures >= self.backoff.attempts or (err.retryable or 0) > self.backoff.retry_after_cap:
            raise err
        if err.retryable is not None and err.retryable >= 0:
            self.sleep(float(err.retryable))
        else:
            self.sleep(self.backoff.delay(failures - 1, None))

    def download(
        self,
        url: str,
        dest: Path,
        *,
        what: str,
        params: Mapping[str, str | int] | None = None,
        size: int | None = None,
        digest: tuple[str, str] | None = None,
    ) -> Moved:
        """Stream ``url`` into ``dest``; resume after dropped connections with ``Range``.

        ``size`` and ``digest`` (``("sha1" | "md5", hex)``), when the provider gave them, are
        checked before the file takes its name. Redirects are followed; httpx drops the
        Authorization header when a redirect leaves the origin (Box and Graph send the bytes
        from pre-authenticated URLs on other hosts).
        """
        import httpx

        host = urllib.parse.urlsplit(url).hostname or ""
        with Sink(dest) as sink:
            hasher = hashlib.new(digest[0]) if digest else None
            resumes = 0
            while True:
                headers = {"Accept-Encoding": "identity"}
                if sink.size:
                    headers["Range"] = f"bytes={sink.size}-"
                response = self.send(
                    "GET",
                    url,
                    what=what,
                    params=params,
                    headers=headers,
                    stream=True,
                    redirects=True,
                    ok=lambda s: s in (200, 206),
                )
                host = response.url.host or host
                try:
                    if sink.size and not _resumes_at(response, sink.size):
                        sink.restart(0)  # the server sent the whole file again: start over
                        hasher = hashlib.new(digest[0]) if digest else None
                    # At most what the provider listed (or the answer announced): an endless
                    # body is cut there, not written until the disk is full.
                    limit = size if size is not None else _total_length(response)
                    try:
                        for block in response.iter_raw():
                            if limit is not None and sink.size + len(block) > limit:
                                raise TransferFailed(
                                    f"{self.name}: {what}: the server sent more than the "
                                    f"{limit} bytes of the file",
                                    server=host,
                                )
                            sink.write(block)
                            if hasher is not None:
                                hasher.update(block)
                    except httpx.TransportError as err:
                        resumes += 1
                        failure = TransferFailed(
                            f"{self.name}: {what}: connection dropped after {sink.size} bytes "
                            f"({type(err).__name__})",
                            kind="Transfer",
                            server=host,
                        )
                        if resumes >= self.backoff.attempts:
                            raise failure from None
                        self.on_retry(failure)
                        self.sleep(self.backoff.delay(resumes - 1, None))
                        continue
                finally:
                    response.close()
                expected = size if size is not None else _total_length(response)
                if expected is not None and sink.size != expected:
                    resumes += 1
                    if sink.size < expected and resumes < self.backoff.attempts:
                        continue  # the body ended early without an error: fetch the rest
                    raise TransferFailed(
                        f"{self.name}: {what}: received {sink.size} bytes, expected {expected}",
                        server=host,
                    )
                break
            if hasher is not None and digest and hasher.hexdigest() != digest[1].lower():
                raise TransferFailed(
                    f"{self.name}: {what}: the {digest[0].upper()} of the received bytes is "
                    "not the one the provider lists for the file",
                    server=host,
                )
            received = sink.size
            sink.commit()
        return Moved(received, host)


def _read_bounded(response: httpx.Response, limit: int, what: str) -> None:
    """Read a (decoded) answer of at most ``limit`` bytes: a hostile or broken server's endless
    body, or a compression bomb, ends the transfer instead of filling memory."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise TransferFailed(
                f"{what}: the server's answer is larger than {limit} bytes",
                server=response.request.url.host,
            )
        chunks.append(chunk)
    response._content = b"".join(chunks)  # what Response.read() keeps; .json() reads it


def _resumes_at(response: httpx.Response, offset: int) -> bool:
    """Whether a ranged answer continues at ``offset`` (206 with a matching Content-Range)."""
    if response.status_code != 206:
        return False
    match = re.match(r"bytes (\d+)-", response.headers.get("content-range", ""))
    return match is not None and int(match.group(1)) == offset


def _total_length(response: httpx.Response) -> int | None:
    """The full size the server announced (Content-Range's total, or Content-Length)."""
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("content-range", ""))
    if match:
        return int(match.group(1))
    length = response.headers.get("content-length")
    if response.status_code == 200 and length and length.isdigit():
        return int(length)
    return None
