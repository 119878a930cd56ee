"""The htsec HTTP application: one FastAPI app that every part adds its routes to.

Errors are RFC 9457 problem documents (``application/problem+json``); bodies are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from htsec import __version__
from htsec.config import Settings
from htsec.errors import HtsecError, TokenRejected
from htsec.tokens.authority import Authority
from htsec.tokens.idtoken import VerifiedToken, Verifier

__all__ = [
    "MAX_BODY",
    "BoundBody",
    "Caller",
    "NoStore",
    "api_docs_enabled",
    "authenticate",
    "create_app",
    "problem",
]

MAX_BODY = 64 * 1024


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": 'Bearer realm="htsec"'} if status == 401 else None
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


class _VerifierCache:
    """Rebuild the verifier (recorded revocations) at most once a second."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self._at = 0.0
        self._verifier: Verifier | None = None

    def get(self) -> Verifier:
        now = time.monotonic()
        if self._verifier is None or now - self._at > 1.0:
            self._verifier = self.authority.verifier()
            self._at = now
        return self._verifier

    def invalidate(self) -> None:
        self._verifier = None


def _start_credmon(
    app: FastAPI, settings: Settings, stop: asyncio.Event
) -> asyncio.Task[None] | None:
    """The all-in-one server refreshes credentials too; a new credential wakes it at once.
    Its task is supervised (:mod:`htsec.credmon.service`) and reported in ``/v1/health``."""
    import logging

    from htsec.credmon.daemon import Credmon
    from htsec.credmon.service import CredmonService

    try:
        credmon = Credmon(settings, cred_dir=settings.cred_dir, creds=app.state.credstore)
    except HtsecError as exc:
        logging.getLogger("htsec.serve").warning("credmon not started: %s", exc)
        app.state.credmon_failure = exc.__class__.__name__
        return None
    service = CredmonService(credmon)
    app.state.credmon = service
    # Routes run in worker threads; an asyncio.Event is set only from its own loop.
    loop = asyncio.get_running_loop()
    app.state.credmon_wake = lambda: loop.call_soon_threadsafe(credmon.engine.wake.set)
    app.state.metrics.extra.append(credmon.engine.metrics.registry)
    return asyncio.create_task(service.run(stop))


def _health(app: FastAPI) -> dict[str, Any]:
    """``degraded`` while the in-process credmon has failed (or could not start); the API
    itself still answers."""
    from htsec.credmon.service import CredmonService

    service: CredmonService | None = getattr(app.state, "credmon", None)
    failure: str | None = getattr(app.state, "credmon_failure", None)
    if service is not None:
        return {"status": "ok" if service.healthy else "degraded", "credmon": service.health()}
    if failure is not None:
        return {"status": "degraded", "credmon": {"state": "not started", "error": failure}}
    return {"status": "ok"}


def create_app(
    settings: Settings, authority: Authority | None = None, *, with_credmon: bool = False
) -> FastAPI:
    authority = authority or Authority(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = _start_credmon(app, settings, stop) if with_credmon else None
        yield
        stop.set()
        if task is not None:
            await task
        app.state.credstore.flush_audit()  # batched fetch records must not be lost on shutdown

    # The interactive documentation and the schema are served only when asked for
    # (HTSEC_SERVE_API_DOCS = true): anonymous callers learn nothing they need from them.
    docs = api_docs_enabled()
    app = FastAPI(
        lifespan=lifespan,
        title="htsec",
        version=__version__,
        description="Security and credential plane for HTCondor pools.",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.state.authority = authority
    app.state.verifiers = _VerifierCache(authority)
    app.state.credmon_wake = None  # set when the in-process credmon runs

    app.add_middleware(BoundBody)
    app.add_middleware(NoStore)

    @app.exception_handler(HtsecError)
    async def htsec_error(_request: Request, exc: HtsecError) -> JSONResponse:
        return problem(exc.status, exc.__class__.__name__, str(exc), code=exc.code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Routing errors (404, 405) as problem documents too."""
        response = problem(exc.status_code, HTTPStatus(exc.status_code).phrase, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_body(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(x) for x in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        return problem(
            422, "Unprocessable Content", f"{'.'.join(first['loc'])}: {first['msg']}", errors=errors
        )

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {**_health(app), "trust_domain": settings.trust_domain, "version": __version__}

    from htsec.creds.api import router as creds_router
    from htsec.creds.crypto import Sealer, generate_key_file
    from htsec.creds.fastpath import AccessTokenFastPath
    from htsec.creds.store import CredStore
    from htsec.metrics import install
    from htsec.tokens.api import router as tokens_router

    generate_key_file(settings.store_key_file)
    credstore = CredStore(authority.store, Sealer(settings.store_key_file))
    app.state.credstore = credstore
    # Middleware added last runs first: every request is measured, access-token fetches then
    # take the fast path, and everything else gets its body bounded.
    app.add_middleware(AccessTokenFastPath, api=app)
    install(app, credstore.status)
    app.include_router(creds_router)
    app.include_router(tokens_router)
    _issuer_routes(app)
    return app


def _issuer_routes(app: FastAPI) -> None:
    """Publish the local issuer's discovery document and JWKS when its key is configured."""
    import logging

    from htsec.credmon.issuer import load_issuer
    from htsec.errors import ConfigError

    try:
        issuer = load_issuer("scitokens")
    except ConfigError as exc:
        logging.getLogger("htsec.serve").info("local issuer not published: %s", exc)
        return
    app.state.issuer = issuer

    @app.get("/.well-known/openid-configuration", tags=["issuer"])
    def openid_configuration() -> dict[str, Any]:
        return issuer.discovery()

    @app.get("/jwks", tags=["issuer"])
    def jwks() -> dict[str, Any]:
        return issuer.jwks()


def api_docs_enabled() -> bool:
    """``HTSEC_SERVE_API_DOCS`` (default false): serve ``/docs``, ``/redoc``, ``/openapi.json``."""
    from htsec.config import param

    value = (param("HTSEC_SERVE_API_DOCS") or "false").strip().lower()
    return value in ("true", "yes", "1", "on")


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


async def authenticate(request: Request) -> VerifiedToken:
    """The verified ID token of the request's ``Authorization: Bearer`` header."""
    auth = request.headers.get("authorization", "")
    scheme, _, raw = auth.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise TokenRejected(
            "no_token", "this endpoint needs an ID token: Authorization: Bearer <token>"
        )
    verifier: Verifier = request.app.state.verifiers.get()
    return verifier.verify(raw.strip())


Caller = Annotated[VerifiedToken, Depends(authenticate)]
