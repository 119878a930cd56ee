"""The credmon's HTTP client for token endpoints, on aiohttp (llhttp, Node.js's C parser).

One :class:`TokenClient` per refresh pass posts form-encoded grants (RFC 6749 section 6) and
returns each answer read in full. It keeps aiohttp's connection pool and parser and adds what
a client carrying refresh tokens needs:

* A request is never retried: a refresh-token grant may have been executed by the provider
  even if the connection broke afterwards (RFC 6749 section 10.4, rotation). aiohttp retries a
  broken keep-alive connection only for idempotent methods; token calls are POSTs.
* No redirects are followed (a 3xx is an answer like any other), no cookies are kept (a token
  endpoint cannot make one credential's request carry state into another's), and
  ``~/.netrc`` is never read: client authentication is the caller's alone (RFC 6749 section
  2.3: one method per request).
* Responses are bounded as bytes arrive: aiohttp's parser refuses a status line or a header
  field (name and value) over ``max_field_size`` bytes and more than ``max_headers`` fields;
  the body is read in pieces and the connection closed once it passes ``max_body_bytes``
  (token responses are a few kilobytes). Requests ask for ``Accept-Encoding: identity``;
  a compressed answer is refused (decoding it would undo the body bound: a decompression
  bomb of a few hundred bytes expands to gigabytes) and nothing is decompressed.
* Proxies from the environment: ``HTTPS_PROXY``/``HTTP_PROXY`` (``ALL_PROXY`` as a fallback)
  minus ``NO_PROXY``, read once per origin; plain http to a loopback endpoint never goes
  through one (it is allowed only because the token stays on this host); only ``http://``
  proxies (as aiohttp supports); an https origin goes through a CONNECT tunnel, TLS verified
  end to end.
* TLS: ``verify`` is ``True`` (the system's CA store; ``SSL_CERT_FILE``/``SSL_CERT_DIR`` are
  honoured), a CA bundle's path, an :class:`ssl.SSLContext`, or ``False`` (tests only); the
  server's name is checked.
* One answer per request: a response that arrives while no request is outstanding (say, on
  a kept-alive connection waiting in the pool) closes the connection. aiohttp would queue it
  and hand it to the next request on that connection as its answer: a token meant for one
  credential given to another (aio-libs/aiohttp#13656). And a connection reset while a
  close-delimited body is read is an error, not the end of the body.
* One ``timeout`` bounds the whole exchange: waiting for a pooled connection, connecting,
  sending, and reading the response to its end. Idle connections are closed after
  ``keepalive_expiry`` seconds, before servers usually close them (node: 5 s).

Every failure is a :class:`~htsec.errors.TokenClientError` (:class:`~htsec.errors.TokenTimeout`
for the timeout) with a short reason; a server's bytes never surface as another exception.

:meth:`TokenClient.refresh` is the refresh-token grant itself: the form, client authentication
(RFC 6749 section 2.3.1) and the answer read as a :class:`Grant` -- the token response, or the
provider's error code (sanitised) and ``Retry-After``. What an answer means for a credential is
the refresh engine's to decide (:mod:`htsec.credmon.engine`).
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import math
import os
import re
import ssl
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from aiohttp.client_exceptions import ClientPayloadError
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDictProxy
from yarl import URL

from htsec import __version__
from htsec.errors import TokenClientError, TokenTimeout

__all__ = ["Grant", "TokenClient", "TokenResponse"]

_READ_PIECE = 64 * 1024
_USER_AGENT = f"htsec-credmon/{__version__}"
_ERROR_CODE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")  # RFC 6749 section 5.2


@dataclass(frozen=True)
class TokenResponse:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError if it is not."""
        return json.loads(self.body)


@dataclass(frozen=True)
class Grant:
    """A token endpoint's answer to a grant, read: ``body`` is the token response (a 200 with
    a JSON object holding a non-empty ``access_token``), else None; ``error`` the provider's
    error code (RFC 6749 section 5.2, sanitised) and ``retry_after`` its Retry-After in
    seconds (429 and 503 only), when given."""

    status: int
    body: dict[str, Any] | None
    error: str | None = None
    retry_after: float | None = None
    #: A 200 whose body is a JSON object without an access token (not "not JSON at all").
    no_access_token: bool = False


def _read_grant(resp: TokenResponse) -> Grant:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status == 200 and isinstance(body, dict):
        token = body.get("access_token")
        if isinstance(token, str) and token:
            return Grant(resp.status, body)
        return Grant(resp.status, None, no_access_token=True)
    error = _error_code(body.get("error")) if isinstance(body, dict) else None
    retry = None
    if resp.status in (429, 503):
        retry = _retry_after(resp.headers.get("retry-after", ""))
    return Grant(resp.status, None, error, retry)


def _error_code(value: object) -> str | None:
    """A provider's ``error`` as RFC 6749 allows it, else a placeholder: it goes into logs and
    the credential's status, so no line breaks or kilobytes of a hostile server's text."""
    if value is None:
        return None
    if isinstance(value, str) and _ERROR_CODE.fullmatch(value):
        return value
    return "(malformed error code)"


def _retry_after(value: str) -> float | None:
    """Retry-After in seconds (RFC 9110 section 10.2.3), finite and not negative; an
    HTTP-date or nonsense gives None (the caller's ordinary back-off applies)."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _client_basic_auth(client_id: str, secret: str) -> str:
    """HTTP Basic client authentication as RFC 6749 section 2.3.1 has it: the client id and
    secret are each form-encoded (application/x-www-form-urlencoded, Appendix B) before they
    are joined with ':' for RFC 7617, so a ':' or '%' in either survives the trip."""
    return _basic(
        urllib.parse.quote_plus(client_id, safe=""), urllib.parse.quote_plus(secret, safe="")
    )


class _StrictHandler(ResponseHandler):
    """aiohttp's connection protocol, with one final answer per request and resets that
    never end a body."""

    _asked = False

    def set_response_params(self, **kwargs: Any) -> None:  # called as each request is sent
        self._asked = True
        super().set_response_params(**kwargs)

    def feed_data(self, data: Any, size: int = 0) -> None:
        code = data[0].code
        if code >= 200 or code == 101:  # a final answer (1xx ones precede it)
            if not self._asked:
                self.close()  # nobody asked: the connection is out of step, never reused
                return
            self._asked = False
        super().feed_data(data, size)

    def connection_lost(self, exc: BaseException | None) -> None:
        payload = self._payload
        if exc is not None and payload is not None and not payload.is_eof():
            payload.set_exception(ClientPayloadError(f"connection lost: {exc}"))
        super().connection_lost(exc)


class _Connector(aiohttp.TCPConnector):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # aiohttp has no public hook for its protocol class; its attribute since 2.x.
        strict = functools.partial(_StrictHandler, loop=self._loop)
        self._factory = cast("functools.partial[ResponseHandler]", strict)


def ssl_context(verify: ssl.SSLContext | str | os.PathLike[str] | bool) -> ssl.SSLContext:
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is True:
        return ssl.create_default_context()
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=os.fspath(verify))


Proxy = tuple[URL, dict[str, str]]  # the proxy, and the headers for it


def _is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: a peer on this host."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def environment_proxy(url: URL) -> Proxy | None:
    """The proxy the environment names for ``url`` (None: go direct), with its credentials
    from the proxy URL as a Proxy-Authorization header."""
    if url.scheme == "http" and _is_loopback(url.host or ""):
        return None  # plain http is allowed there only because it stays on this host
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host or ""):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy  # curl's and httpx's reading of "host:port"
    purl = URL(proxy)
    if purl.scheme != "http" or not purl.host:
        raise TokenClientError(
            f"proxy {purl.with_user(None)} for {url.scheme} URLs: only http:// proxies "
            "are supported"
        )
    headers = {}
    if purl.user is not None:
        headers["Proxy-Authorization"] = _basic(purl.user, purl.password or "")
    return purl.with_user(None), headers


class TokenClient:
    """Posts forms to token endpoints; use one per pass and ``await aclose()`` it."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | str | os.PathLike[str] | bool = True,
        max_connections: int = 16,
        keepalive_expiry: float = 2.0,
        max_field_size: int = 8190,
        max_headers: int = 64,
        max_body_bytes: int = 1024 * 1024,
        trust_env: bool = True,
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.max_field_size = max_field_size
        self.max_headers = max_headers
        self.max_body_bytes = max_body_bytes
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None  # made at the first https request
        self._trust_env = trust_env
        self._proxies: dict[tuple[str, str, int], Proxy | None] = {}
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}  # parsed once: a pass posts to a few token URLs
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise TokenClientError("the client is closed")
        if self._session is None:
            connector = _Connector(
                limit=self.max_connections,
                limit_per_host=0,
                keepalive_timeout=self.keepalive_expiry,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,  # it would also read ~/.netrc: proxies are looked up here
                max_line_size=self.max_field_size,
                max_field_size=self.max_field_size,
                max_headers=self.max_headers,
            )
        return self._session

    def _ssl_for(self, url: URL) -> ssl.SSLContext | bool:
        """The TLS context for an https URL. Loading a CA store costs 50-150 ms here: with
        ``verify=True`` aiohttp's own verified context (the system's store, loaded once when
        aiohttp is imported) is used, and another is made only at a pass's first https call."""
        if url.scheme != "https" or self._verify is True:
            return True
        if self._ssl is None:
            self._ssl = ssl_context(self._verify)
        return self._ssl

    def _proxy_for(self, url: URL) -> Proxy | None:
        if not self._trust_env:
            return None
        key = (url.scheme, url.host or "", url.port or 0)
        if key not in self._proxies:
            self._proxies[key] = environment_proxy(url)
        return self._proxies[key]

    async def post_form(
        self,
        url: str,
        form: Mapping[str, str],
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> TokenResponse:
        """POST ``form`` (application/x-www-form-urlencoded) once; the answer, read in full."""
        target = self._urls.get(url)
        if target is None:
            if len(self._urls) > 1000:
                self._urls.clear()
            target = self._urls[url] = URL(url)
        if target.scheme not in ("http", "https") or not target.host:
            raise TokenClientError(f"unsupported URL {url[:80]!r}: use http(s)://host/...")
        sent = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            **(headers or {}),
            "Accept-Encoding": "identity",
        }
        for name, value in sent.items():
            if any(c in name or c in value for c in "\r\n\0"):
                raise TokenClientError(f"line break in the {name[:40]!r} header")
        data = urllib.parse.urlencode(form).encode()
        session = self._open()
        proxy = self._proxy_for(target)
        if proxy is not None and target.scheme == "http":
            sent.update(proxy[1])  # a forwarded request carries them; https: the CONNECT
        host = f"{target.host}:{target.port}"
        limit = self._timeouts.get(timeout)
        if limit is None:
            # aiohttp's total timeout: the pool wait, connecting, sending and the body's read
            limit = self._timeouts[timeout] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with session.post(
                target,
                data=data,
                headers=sent,
                allow_redirects=False,
                timeout=limit,
                ssl=self._ssl_for(target),
                proxy=proxy[0] if proxy else None,
                proxy_headers=proxy[1] if proxy and target.scheme == "https" else None,
            ) as resp:
                return await self._read(resp)
        except TimeoutError:
            raise TokenTimeout(f"no complete answer from {host} within {timeout:g} s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TokenClientError(f"TLS with {host} failed: {exc.certificate_error}") from None
        except aiohttp.ClientConnectorSSLError as exc:
            raise TokenClientError(f"TLS with {host} failed: {exc.os_error}") from None
        except aiohttp.ClientConnectorError as exc:
            raise TokenClientError(f"cannot connect to {host}: {exc.os_error}") from None
        except aiohttp.ClientResponseError as exc:  # the parser's refusals
            raise TokenClientError(f"malformed HTTP response: {_short(exc.message)}") from None
        except aiohttp.ServerDisconnectedError:
            raise TokenClientError(f"{host} closed the connection before answering") from None
        except aiohttp.ClientPayloadError as exc:
            raise TokenClientError(f"{host} cut the response short: {_short(exc)}") from None
        except aiohttp.ClientError as exc:
            raise TokenClientError(f"{exc.__class__.__name__}: {_short(exc)}") from None

    @staticmethod
    def secure(url: str) -> bool:
        """May a refresh token go to ``url``? https, or plain http to a loopback address (a
        provider on this host, or a test)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "https":
            return True
        return parts.scheme == "http" and _is_loopback(parts.hostname or "")

    async def refresh(
        self,
        url: str,
        refresh_token: str,
        *,
        client_id: str,
        secret: str | None,
        auth_method: str | None = None,
        timeout: float = 10.0,
    ) -> Grant:
        """One refresh-token grant (RFC 6749 section 6), sent once. The client authenticates
        in the form with ``auth_method`` ``client_secret_post``, else with HTTP Basic when it
        has a secret; a public client sends only its id. Raises :class:`TokenClientError` if
        no answer came (the provider may have processed the request all the same)."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if auth_method == "client_secret_post":
            form["client_id"] = client_id
            if secret:
                form["client_secret"] = secret
        elif secret:
            headers["Authorization"] = _client_basic_auth(client_id, secret)
        else:
            form["client_id"] = client_id
        return _read_grant(await self.post_form(url, form, headers=headers, timeout=timeout))

    async def _read(self, resp: aiohttp.ClientResponse) -> TokenResponse:
        if resp.status < 200:  # aiohttp skips 100/103; a 101 switched protocols
            resp.close()
            raise TokenClientError(f"the server switched protocols ({resp.status}), not asked for")
        problem = _framing_problem(resp.raw_headers)
        if problem is not None:
            resp.close()
            raise TokenClientError(problem)
        if resp.content_length is not None and resp.content_length > self.max_body_bytes:
            resp.close()
            raise TokenClientError("response body too large")
        chunks: list[bytes] = []
        size = 0
        while piece := await resp.content.read(_READ_PIECE):
            size += len(piece)
            if size > self.max_body_bytes:
                resp.close()
                raise TokenClientError("response body too large")
            chunks.append(piece)
        return TokenResponse(resp.status, resp.headers, b"".join(chunks))

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> TokenClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"TokenClient(max_connections={self.max_connections})"


def _framing_problem(raw: tuple[tuple[bytes, bytes], ...]) -> str | None:
    """What makes a response unacceptable before its body is read: a compressed body, a
    transfer coding other than chunked, or an ambiguous length (aiohttp's response parser is
    lenient about repeated Content-Length)."""
    lengths = 0
    for name, value in raw:
        lname = name.lower()
        if lname == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            return f"compressed response refused (Content-Encoding: {value[:40]!r})"
        if lname == b"transfer-encoding":
            codings = [c.strip().lower() for c in value.split(b",")]
            if any(c not in (b"chunked", b"identity", b"") for c in codings):
                return f"transfer coding refused (Transfer-Encoding: {value[:40]!r})"
        if lname == b"content-length":
            lengths += 1
    if lengths > 1:
        return "malformed HTTP response: more than one Content-Length"
    return None


def _short(value: object) -> str:
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text[:160]
