"""The credd's hot path as plain ASGI: access-token fetches by execution points.

``GET /v1/creds/{service}/access-token`` is what every job start and every
``SEC_CREDENTIAL_REFRESH`` period asks for, so it skips FastAPI's routing, dependency
injection and exception middleware (about two thirds of a request's CPU time, measured with
``bench/credd.py``) and calls the same :func:`htsec.creds.api.fetch_access_token` the
documented FastAPI route uses. Authentication, authorization, audit, metrics, error documents
(RFC 9457) and size bounds are the same; everything else passes through untouched.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from htsec.creds.api import fetch_access_token
from htsec.errors import HtsecError, UriTooLong
from htsec.web.auth import authenticate_scope, peer
from htsec.web.problems import error_problem

__all__ = ["AccessTokenFastPath"]

_PATH = re.compile(r"/v1/creds/([^/]{1,200})/access-token")
_MAX_QUERY = 1024


class _Route:
    """What the metrics middleware reads from ``scope["route"]``."""

    path = "/v1/creds/{service}/access-token"


class AccessTokenFastPath:
    def __init__(self, app: ASGIApp, *, api: Any) -> None:
        self.app = app
        self.api = api  # the FastAPI app, for its state (credstore, verifiers, metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = _Route
        state = self.api.state
        try:
            # scope["path"] is already percent-decoded: decoding again would let b%256Fx be box.
            body = self._handle(scope, match.group(1), state)
        except HtsecError as exc:
            await error_problem(exc)(scope, receive, send)
            return
        state.metrics.fetches.inc()
        payload = json.dumps(body, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    @staticmethod
    def _handle(scope: Scope, service: str, state: Any) -> dict[str, Any]:
        caller = authenticate_scope(scope, state.verifiers)
        raw_query = scope.get("query_string", b"")
        if len(raw_query) > _MAX_QUERY:
            raise UriTooLong(f"the query string is limited to {_MAX_QUERY} bytes")
        # As Starlette parses it for the documented route (blank values kept: ?user= is "").
        query = dict(parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True))
        return fetch_access_token(
            state.credstore,
            caller,
            service,
            query.get("user"),
            query.get("handle"),
            peer(scope),
            state.settings.uid_domain,
        )
