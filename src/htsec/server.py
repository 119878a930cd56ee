"""The htsec HTTP application: one FastAPI app composed of the parts' routers.

Each part brings a router (``htsec.tokens.api``, ``htsec.creds.api``, ``htsec.credmon.api``;
the portal's will plug in the same way) built on the web layer (:mod:`htsec.web`: problem
documents, the caller, bounds). This module only puts them together with the middleware, the
shared state and ``/v1/health``; running it (and the in-process credmon) is
:mod:`htsec.serve`'s. Nothing imports this module but ``serve`` (and tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI

from htsec import __version__
from htsec.config import Settings
from htsec.credmon import api as issuer_api
from htsec.creds import api as creds_api
from htsec.creds.fastpath import AccessTokenFastPath
from htsec.creds.open import open_credstore
from htsec.execute import api as jobs_api
from htsec.metrics import install as install_metrics
from htsec.portal import app as portal_app
from htsec.portal import device as device_login
from htsec.tokens import api as tokens_api
from htsec.tokens.authority import Authority
from htsec.web.bounds import BoundBody, NoStore
from htsec.web.problems import install_handlers
from htsec.web.verifier import VerifierCache

__all__ = ["HealthCheck", "Lifespan", "add_health_check", "create_app"]

#: ``(healthy, what /v1/health shows)``, asked on every health request.
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]
#: Runs inside the app's lifespan (e.g. ``htsec serve``'s in-process credmon).
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def add_health_check(app: FastAPI, name: str, check: HealthCheck) -> None:
    """Report ``check`` under ``name`` in ``/v1/health``; while it is unhealthy the status is
    ``degraded`` (the API itself still answers)."""
    app.state.health_checks[name] = check


def create_app(
    settings: Settings, authority: Authority | None = None, *, lifespan: Lifespan | None = None
) -> FastAPI:
    """The app with every part's routes; ``lifespan`` runs while it serves, stopped before
    the credential store's batched audit records are flushed."""
    authority = authority or Authority(settings)

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            # Batched fetch records must not be lost on shutdown (flushed last).
            stack.callback(app.state.credstore.flush_audit)
            if lifespan is not None:
                await stack.enter_async_context(lifespan(app))
            yield

    # The interactive documentation and the schema are served only when asked for
    # (HTSEC_SERVE_API_DOCS = true): anonymous callers learn nothing they need from them.
    docs = settings.serve_api_docs
    app = FastAPI(
        lifespan=run,
        title="htsec",
        version=__version__,
        description="Security and credential plane for HTCondor pools.",
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.state.authority = authority
    app.state.verifiers = VerifierCache(authority.verifier)
    app.state.health_checks = {}
    app.state.credmon_wake = None  # set when an in-process credmon runs
    app.state.execute = None  # set when an execution point runs (htsec serve)
    credstore = open_credstore(settings, authority.store)
    app.state.credstore = credstore

    install_handlers(app)
    # Middleware added last runs first: every request is measured, access-token fetches then
    # take the fast path, and everything else gets its body bounded.
    app.add_middleware(BoundBody)
    app.add_middleware(NoStore)
    app.add_middleware(AccessTokenFastPath, api=app)
    install_metrics(app, credstore.status)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok"}
        for name, check in app.state.health_checks.items():
            healthy, body[name] = check()
            if not healthy:
                body["status"] = "degraded"
        return {**body, "trust_domain": settings.trust_domain, "version": __version__}

    app.include_router(creds_api.router)
    app.include_router(tokens_api.router)
    app.include_router(device_login.router)
    portal_app.install(app, settings)
    app.include_router(jobs_api.router)
    issuer = issuer_api.router()
    if issuer is not None:
        app.include_router(issuer)
    return app
