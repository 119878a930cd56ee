"""Putting the portal on an app: mounted by ``htsec serve`` (:func:`install`), or alone
(:func:`create_portal_app`, ``htsec portal``).

The portal's routes are served under the path of its URL (``HTSEC_PORTAL_URL``, else
``CREDMON_WEB_PREFIX``, else ``HTSEC_SERVER_URL``: :func:`htsec.creds.links.portal_url`), so a
``CREDMON_WEB_PREFIX`` of ``https://host/oauth`` serves ``/oauth/key/<64 hex>`` as HTCondor's
web server does. Its state lives on ``app.state``: the sessions (:mod:`htsec.portal.sessions`),
the providers (:mod:`htsec.portal.providers`, read on first use), the drop-in
(:mod:`htsec.portal.dropin`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import FastAPI

from htsec import __version__
from htsec.config import Settings
from htsec.creds.links import portal_url
from htsec.creds.open import open_credstore
from htsec.errors import ConfigError
from htsec.portal import dashboard, routes
from htsec.portal.dropin import DropIn
from htsec.portal.providers import ProviderCache
from htsec.portal.sessions import SessionStore
from htsec.store import Store
from htsec.web.bounds import BoundBody
from htsec.web.problems import install_handlers

__all__ = ["create_portal_app", "install"]


def install(app: FastAPI, settings: Settings) -> None:
    """Add the portal's routes and state to ``app`` (whose ``state.credstore`` is set)."""
    base = portal_url(settings)
    prefix = urlsplit(base).path.rstrip("/")
    if prefix and not prefix.startswith("/"):  # pragma: no cover - urlsplit paths start with /
        raise ConfigError(f"the portal URL {base!r} has a path that is not absolute")
    app.state.portal_base = base
    app.state.portal_prefix = prefix
    app.state.portal_sessions = SessionStore(app.state.credstore.store)
    app.state.portal_providers = ProviderCache(base)
    app.state.portal_dropin = DropIn(settings)
    app.include_router(routes.router, prefix=prefix)
    if hasattr(app.state, "verifiers"):  # the dashboard verifies ID tokens: htsec serve only
        app.include_router(dashboard.router, prefix=prefix)


def create_portal_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """The portal alone, on the store of ``settings`` (``htsec portal``)."""
    app = FastAPI(
        title="htsec portal",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.credstore = open_credstore(settings, store)
    app.state.credmon_wake = None
    install_handlers(app)
    app.add_middleware(BoundBody)

    @app.get("/v1/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    install(app, settings)
    return app
