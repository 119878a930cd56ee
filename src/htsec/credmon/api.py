"""HTTP API of the credmon's local issuer: its OpenID discovery document and JWKS, so relying
parties (XRootD, scitokens-cpp) can verify the tokens it signs. Published only when the
issuer's key is configured (``LOCAL_CREDMON_PRIVATE_KEY``, :mod:`htsec.credmon.issuer`)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter

from htsec.credmon.issuer import load_issuer
from htsec.errors import ConfigError

__all__ = ["router"]

log = logging.getLogger("htsec.serve")


def router() -> APIRouter | None:
    """The issuer's routes, or None (logged) when no issuer key is configured."""
    try:
        issuer = load_issuer("scitokens")
    except ConfigError as exc:
        log.info("local issuer not published: %s", exc)
        return None
    routes = APIRouter(tags=["issuer"])

    @routes.get("/.well-known/openid-configuration")
    def openid_configuration() -> dict[str, Any]:
        return issuer.discovery()

    @routes.get("/jwks")
    def jwks() -> dict[str, Any]:
        return issuer.jwks()

    return routes
