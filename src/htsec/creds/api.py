"""The credd HTTP API: store, query, list and delete OAuth credentials.

Callers authenticate with an ID token (``Authorization: Bearer``) and are authorized by
identity and scope (:mod:`htsec.authz`): ``alice@$(UID_DOMAIN)`` sees (READ) and changes (WRITE)
only ``alice``'s credentials; identities of other domains own none. A token with ``DAEMON``
authorization (an execution point) may fetch access tokens of any user for the jobs it runs;
``ADMINISTRATOR`` may list, read and delete anyone's. Nothing returns a refresh token, ever.
Errors are RFC 9457 problem documents.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from htsec.authz import Perm, credential_owner, grants
from htsec.creds.check import check_needs, local_services
from htsec.creds.creddir import CredDir
from htsec.creds.links import MAX_NEEDS, Need, create_link, link_url, portal_url
from htsec.creds.store import CredentialInfo, CredStore
from htsec.creds.writes import MAX_TOKEN_TEXT
from htsec.errors import CredentialFileError, CredStoreError, Forbidden, HtsecError
from htsec.web.auth import Caller, authenticate, peer, require
from htsec.web.verifier import VerifiedCaller

__all__ = ["fetch_access_token", "router", "wake_credmon"]

router = APIRouter(prefix="/v1", tags=["credentials"])
log = logging.getLogger("htsec.credd")

# Lengths are bounded here; the characters are checked by htsec.creds.names (HTCondor's rules),
# whose BadCredentialName becomes a 400 problem document naming the rule.
_NAME = r"^[A-Za-z0-9=+.-][A-Za-z0-9=+._-]{0,127}$"
Handle = Annotated[str | None, Query(max_length=200)]
UserQ = Annotated[str | None, Query(max_length=200)]
Service = Annotated[str, Path(max_length=200)]


class CredIn(BaseModel):
    """A credential to store; at least one of the tokens."""

    refresh_token: str | None = Field(default=None, max_length=MAX_TOKEN_TEXT)
    access_token: str | None = Field(default=None, max_length=MAX_TOKEN_TEXT)
    expires_in: int | None = Field(default=None, ge=0, le=10 * 365 * 86400)
    token_type: str = Field(default="bearer", max_length=64)
    scopes: list[str] = Field(default_factory=list, max_length=64)
    audience: str = Field(default="", max_length=1024)
    provider: str | None = Field(default=None, max_length=128, pattern=_NAME)


def _poke_credmon(cred_dir: FilePath | None) -> None:
    """SIGHUP the credmon whose pid is in ``<cred dir>/pid``, as HTCondor's credd does.

    Anyone who can write the credential root (group-writable by design) can put a file
    there, so :meth:`CredDir.read_pid` reads it bounded, without blocking or following links,
    and only from the credmon's user; a bad file is logged, nothing is signalled."""
    if cred_dir is None:
        return
    try:
        pid = CredDir(cred_dir).read_pid()
    except CredentialFileError as exc:
        log.warning("not waking the credmon: %s", exc)
        return
    if pid is None or pid == os.getpid():
        return
    # No credmon running there: it will find the credential on its next pass.
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGHUP)


def wake_credmon(request: Request) -> None:
    """A new credential is served at once: the in-process credmon of ``htsec serve`` is
    woken directly (never through the pid file); otherwise the one in ``<cred dir>/pid``."""
    wake = request.app.state.credmon_wake
    if wake is not None:
        wake()
    else:
        _poke_credmon(request.app.state.settings.cred_dir)


def _creds(request: Request) -> CredStore:
    cs: CredStore = request.app.state.credstore
    return cs


def _uid_domain(request: Request) -> str:
    domain: str = request.app.state.settings.uid_domain
    return domain


def _no_owner(caller: VerifiedCaller, uid_domain: str) -> Forbidden:
    return Forbidden(
        f"{caller.subject} owns no credentials: they belong to user@{uid_domain} "
        "(UID_DOMAIN); identities of other domains reach a user's credentials only with "
        "ADMINISTRATOR or DAEMON authorization, naming the user"
    )


def _target(caller: VerifiedCaller, user: str | None, *, perm: Perm, uid_domain: str) -> str:
    """The user whose credentials the caller acts on, or 403."""
    require(caller, perm)
    me = credential_owner(caller.subject, uid_domain)
    if user is None or user == me:
        if me is None:
            raise _no_owner(caller, uid_domain)
        return me
    require(caller, Perm.ADMINISTRATOR, to=f"act on {user}'s credentials")
    return user


def _outcome(exc: HtsecError) -> str:
    return "denied" if isinstance(exc, Forbidden) else exc.code


def _audit_refusal(
    request: Request,
    caller: VerifiedCaller,
    action: str,
    user: str | None,
    service: str,
    handle: str | None,
    exc: HtsecError,
) -> None:
    _creds(request).record_access(
        actor=caller.subject,
        user=user or credential_owner(caller.subject, _uid_domain(request)) or "",
        service=service,
        handle=handle,
        peer=peer(request.scope),
        outcome=_outcome(exc),
        action=action,
    )


_FETCH_PARAMS = {
    "parameters": [
        {
            "name": n,
            "in": "query",
            "required": False,
            "schema": {"type": "string", "maxLength": 200},
        }
        for n in ("user", "handle")
    ]
}


def fetch_access_token(
    cs: CredStore,
    caller: VerifiedCaller,
    service: str,
    user: str | None,
    handle: str | None,
    peer: str,
    uid_domain: str,
) -> dict[str, Any]:
    """The ``.use`` JSON of a credential for ``caller``, audited (refusals and errors too);
    raises HtsecError subclasses.

    The owner (``user@$(UID_DOMAIN)``) may fetch its own tokens with a token that grants
    ``READ``; a ``DAEMON`` token (an execution point) anyone's.
    """
    if (user and len(user) > 200) or (handle and len(handle) > 200):
        raise CredStoreError("user and handle are at most 200 characters")
    me = credential_owner(caller.subject, uid_domain)
    target = user if user is not None else me
    outcome = "ok"
    try:
        require(caller, Perm.READ)
        if target is None:
            raise _no_owner(caller, uid_domain)
        if target != me:
            require(caller, Perm.DAEMON, to=f"fetch {target}'s tokens")
        return cs.access_token(target, service, handle).use_json()
    except HtsecError as exc:
        outcome = _outcome(exc)
        raise
    except Exception:
        outcome = "error"
        raise
    finally:
        cs.record_access(
            actor=caller.subject,
            user=target or "",
            service=service,
            handle=handle,
            peer=peer,
            outcome=outcome,
        )


@router.get("/creds/{service}/access-token", openapi_extra=_FETCH_PARAMS)
async def access_token(service: Service, request: Request) -> dict[str, Any]:
    """A job's access token (``.use`` JSON): for execution points (DAEMON) and the owner.

    Requests normally take the fast path in :mod:`htsec.creds.fastpath`; this route documents
    the endpoint and serves it when the fast path is not installed.
    """
    caller = await authenticate(request)
    query = request.query_params
    body = fetch_access_token(
        _creds(request),
        caller,
        service,
        query.get("user"),
        query.get("handle"),
        peer(request.scope),
        _uid_domain(request),
    )
    request.app.state.metrics.fetches.inc()
    return body


@router.put("/creds/{service}")
def store_credential(
    service: Service,
    body: CredIn,
    request: Request,
    caller: Caller,
    handle: Handle = None,
    if_match: Annotated[str | None, Header(max_length=20)] = None,
) -> dict[str, Any]:
    """Store (create or replace) one of the caller's credentials."""
    try:
        info = _store(service, body, request, caller, handle, if_match)
    except HtsecError as exc:
        _audit_refusal(request, caller, "store", None, service, handle, exc)
        raise
    wake_credmon(request)
    return info.as_dict()


def _store(
    service: str,
    body: CredIn,
    request: Request,
    caller: VerifiedCaller,
    handle: str | None,
    if_match: str | None,
) -> CredentialInfo:
    user = _target(caller, None, perm=Perm.WRITE, uid_domain=_uid_domain(request))
    expect = None
    if if_match is not None:
        try:
            expect = int(if_match.strip('"W/'))
        except ValueError:
            raise CredStoreError("If-Match must be a credential version number") from None
    return _creds(request).put(
        user,
        service,
        handle,
        refresh_token=body.refresh_token,
        access_token=body.access_token,
        expires_at=int(time.time()) + body.expires_in if body.expires_in is not None else None,
        token_type=body.token_type,
        scopes=body.scopes,
        audience=body.audience,
        provider=body.provider,
        actor=caller.subject,
        peer=peer(request.scope),
        expect_version=expect,
    )


@router.get("/creds")
def list_credentials(
    request: Request, caller: Caller, user: UserQ = None, all_users: bool = False
) -> dict[str, Any]:
    """The caller's credentials (ADMINISTRATOR: ``?user=NAME`` or ``?all_users=true``)."""
    domain = _uid_domain(request)
    if all_users:
        require(caller, Perm.ADMINISTRATOR, to="list every user's credentials")
        rows = _creds(request).credentials()
    else:
        rows = _creds(request).credentials(_target(caller, user, perm=Perm.READ, uid_domain=domain))
    return {"credentials": [r.as_dict() for r in rows]}


@router.get("/creds/{service}")
def get_credential(
    service: Service, request: Request, caller: Caller, handle: Handle = None, user: UserQ = None
) -> dict[str, Any]:
    target = _target(caller, user, perm=Perm.READ, uid_domain=_uid_domain(request))
    return _creds(request).info(target, service, handle).as_dict()


@router.delete("/creds/{service}", status_code=204)
def delete_credential(
    service: Service, request: Request, caller: Caller, handle: Handle = None, user: UserQ = None
) -> Response:
    try:
        target = _target(caller, user, perm=Perm.WRITE, uid_domain=_uid_domain(request))
        cs = _creds(request)
        cs.info(target, service, handle)  # 404 when absent
        cs.delete(target, service, handle, actor=caller.subject, peer=peer(request.scope))
    except HtsecError as exc:
        _audit_refusal(request, caller, "delete", user, service, handle, exc)
        raise
    return Response(status_code=204)


@router.get("/creds-status")
def status(request: Request, caller: Caller) -> dict[str, Any]:
    """Per service, how many of the caller's (ADMINISTRATOR: all) credentials are in each state."""
    cs = _creds(request)
    if grants(caller, Perm.ADMINISTRATOR):
        return {"services": cs.status()}
    out: dict[str, dict[str, int]] = {}
    for c in cs.credentials(_target(caller, None, perm=Perm.READ, uid_domain=_uid_domain(request))):
        out.setdefault(c.service, {}).setdefault(c.state, 0)
        out[c.service][c.state] += 1
    return {"services": out}


class NeedIn(BaseModel):
    """One credential an authorisation link asks for."""

    service: str = Field(max_length=200)
    handle: str | None = Field(default=None, max_length=200)
    scopes: list[str] = Field(default_factory=list, max_length=64)
    audience: str | None = Field(default=None, max_length=1024)


class AuthorizationsIn(BaseModel):
    needs: list[NeedIn] = Field(min_length=1, max_length=MAX_NEEDS)


@router.post("/creds/authorizations", status_code=201)
def create_authorization(
    body: AuthorizationsIn, request: Request, caller: Caller
) -> dict[str, Any]:
    """A one-time link (:mod:`htsec.creds.links`) at which the caller's own user logs in at
    the providers of ``needs``: ``{"url": "<portal>/key/<64 hex>", "expires_at": ...}``."""
    user = _target(caller, None, perm=Perm.WRITE, uid_domain=_uid_domain(request))
    needs = [Need(n.service, n.handle, frozenset(n.scopes), n.audience) for n in body.needs]
    link = create_link(_creds(request), user=user, needs=needs, actor=caller.subject)
    return {
        "url": link_url(portal_url(request.app.state.settings), link.id),
        "expires_at": link.expires_at,
        "user": link.user,
    }


class CheckIn(BaseModel):
    """The credentials one submit needs (``user``: another user's, for ADMINISTRATOR)."""

    needs: list[NeedIn] = Field(max_length=MAX_NEEDS)
    user: str | None = Field(default=None, max_length=200)
    #: Also create the authorisation link for what is missing (the caller's own user only).
    authorize: bool = False


@router.post("/creds/check")
async def check_credentials(body: CheckIn, request: Request, caller: Caller) -> dict[str, Any]:
    """Which of ``needs`` the user has (:mod:`htsec.creds.check`): per need ``present``,
    ``missing``, ``mismatch`` or ``needs-reauth``, and ``ready`` when all are present. Missing
    local-issuer credentials are created (and the credmon woken), as condor_credd does. With
    ``authorize``, a need to log in (and no mismatch) also gets the one-time link (``url``,
    ``expires_at``), as ``POST /v1/creds/authorizations`` would make it. Needs WRITE, as
    HTCondor's CREDD_CHECK_CREDS.

    A coroutine on purpose, like the access-token fast path: its one indexed read runs on
    the event loop instead of a worker thread (the hops to and from the thread pool were most
    of a request's time on a loaded host, measured with bench/portal.py's gate half)."""
    domain = _uid_domain(request)
    try:
        user = _target(caller, body.user, perm=Perm.WRITE, uid_domain=domain)
        needs = [Need(n.service, n.handle, frozenset(n.scopes), n.audience) for n in body.needs]
        state = request.app.state
        local = getattr(state, "check_local_services", None)
        if local is None:
            local = state.check_local_services = local_services()
        results = check_needs(_creds(request), user, needs, local=local, actor=caller.subject)
    except HtsecError as exc:
        _audit_refusal(request, caller, "check", body.user, "", None, exc)
        raise
    if any(r.detail == "created for the local issuer" for r in results):
        wake_credmon(request)
    out: dict[str, Any] = {
        "user": user,
        "ready": all(r.state == "present" for r in results),
        "needs": [r.as_dict() for r in results],
    }
    login = [n for n, r in zip(needs, results, strict=True) if r.state in _LOGIN]
    own = body.user is None or body.user == credential_owner(caller.subject, domain)
    if body.authorize and own and login and all(r.state != "mismatch" for r in results):
        # As condor_credd answers CREDD_CHECK_CREDS with the URL: one round trip per submit.
        # The link is a write: off the event loop.
        link = await run_in_threadpool(
            create_link, _creds(request), user=user, needs=login, actor=caller.subject
        )
        out["url"] = link_url(portal_url(state.settings), link.id)
        out["expires_at"] = link.expires_at
    return out


_LOGIN = ("missing", "needs-reauth")
