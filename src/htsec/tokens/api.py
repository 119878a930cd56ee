"""HTTP API of the token authority: token requests, approval, auto-approval, revocation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field

from htsec.authz import Perm, granted, in_order
from htsec.config import Settings
from htsec.tokens.requests import MAX_PENDING_PER_PEER, Requests
from htsec.web.auth import Caller, peer, require
from htsec.web.verifier import VerifiedCaller

__all__ = ["router", "token_requests"]

router = APIRouter(prefix="/v1", tags=["tokens"])


class RequestIn(BaseModel):
    identity: str = Field(min_length=3, max_length=256)
    authz: list[str] = Field(default_factory=list, max_length=16)
    lifetime: int | None = Field(default=None, ge=0, le=10 * 365 * 86400)
    client_id: str = Field(default="", max_length=256)


class RuleIn(BaseModel):
    netblock: str = Field(min_length=2, max_length=64)
    lifetime: int = Field(ge=1, le=10 * 365 * 86400)


def token_requests(request: Request) -> Requests:
    """The app's token requests (:class:`Requests`), made on first use with its settings."""
    reqs: Requests | None = getattr(request.app.state, "requests", None)
    if reqs is None:
        settings: Settings = request.app.state.settings
        reqs = Requests(
            request.app.state.authority,
            issuer_key=settings.token_issuer_key,
            limits=list(settings.token_request_limits)
            if settings.token_request_limits is not None
            else None,
            max_per_peer=settings.token_request_max_per_peer or MAX_PENDING_PER_PEER,
        )
        request.app.state.requests = reqs
    return reqs


def _admin(caller: VerifiedCaller) -> str:
    require(caller, Perm.ADMINISTRATOR)
    return caller.subject


@router.post("/token-requests", status_code=201)
def submit(body: RequestIn, request: Request) -> dict[str, Any]:
    """Ask for a token (anyone may ask; an administrator or a rule decides)."""
    view, secret = token_requests(request).submit(
        identity=body.identity,
        authz=body.authz,
        lifetime=body.lifetime,
        client_id=body.client_id,
        requester=body.client_id or "anonymous",
        peer=peer(request.scope),
    )
    return {"request": view.__dict__, "secret": secret}


@router.get("/token-requests/{rid}")
def collect(
    rid: str, request: Request, x_htsec_request_secret: Annotated[str, Header(max_length=128)]
) -> dict[str, Any]:
    """The requester polls with its secret; an approved request returns the token once."""
    view, token = token_requests(request).collect(rid, x_htsec_request_secret)
    return {"request": view.__dict__, "token": token}


@router.get("/token-requests")
def list_requests(request: Request, caller: Caller, all: bool = False) -> dict[str, Any]:
    _admin(caller)
    return {"requests": [v.__dict__ for v in token_requests(request).pending(include_done=all)]}


@router.post("/token-requests/{rid}/approve")
def approve(rid: str, request: Request, caller: Caller) -> dict[str, Any]:
    view = token_requests(request).decide(rid, approve=True, by=_admin(caller))
    return {"request": view.__dict__}


@router.post("/token-requests/{rid}/deny")
def deny(rid: str, request: Request, caller: Caller) -> dict[str, Any]:
    view = token_requests(request).decide(rid, approve=False, by=_admin(caller))
    return {"request": view.__dict__}


@router.post("/auto-approve-rules", status_code=201)
def add_rule(body: RuleIn, request: Request, caller: Caller) -> dict[str, Any]:
    rule = token_requests(request).add_rule(body.netblock, body.lifetime, by=_admin(caller))
    return {"rule": {"id": rule.id, "netblock": rule.netblock, "expires_at": rule.expires_at}}


@router.get("/auto-approve-rules")
def list_rules(request: Request, caller: Caller) -> dict[str, Any]:
    _admin(caller)
    return {
        "rules": [
            {
                "id": r.id,
                "netblock": r.netblock,
                "expires_at": r.expires_at,
                "created_by": r.created_by,
            }
            for r in token_requests(request).rules()
        ]
    }


@router.get("/whoami")
def whoami(caller: Caller) -> dict[str, Any]:
    """The identity of the caller's token, the authorizations its scope lists, and every level
    it grants (those and what they imply, :mod:`htsec.authz`)."""
    return {
        "identity": caller.subject,
        "authorizations": caller.authorizations,
        "grants": in_order(granted(caller.authorizations)),
        "key": caller.kid,
    }
