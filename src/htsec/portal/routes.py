"""The portal's authorisation routes (HTCondor's credmon web server's, under the portal's path):

``GET /key/<64 hex>``
    the link's page: who it is for, each credential with its scopes, a "Log in at ..." form per
    credential still missing. The first opening binds the link to this browser session; a link
    of htsec's store, or condor_credd's ``<cred root>/<64 hex>`` file.
``POST /login/<name>`` (form: ``key``, ``csrf_token``)
    starts the authorization-code flow for the credential ``<name>`` (``service`` or
    ``service_handle``; also HTCondor's ``"service handle"``) of the link, and sends the browser
    to the provider. ``GET /login/<name>?key=`` shows the button only: nothing changes on a GET.
``GET /return/<provider>``
    where the provider sends the browser back: the login is claimed (``state``), the code
    redeemed, the refresh token stored sealed, the credential files written when HTCondor's
    credential directory is configured, the credmon woken; then back to the link's page.
``GET /static/portal.css``

Every failure is a page saying what happened, with nothing stored and an audit row (actions
``link``, ``login``, ``csrf``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from htsec.creds.api import wake_credmon
from htsec.creds.audit import audit_entry
from htsec.creds.check import local_services, need_states
from htsec.creds.links import Link, complete_need_in, lookup_link, open_link, peek_link
from htsec.creds.names import TokenName
from htsec.creds.pending import check_key
from htsec.creds.store import CredStore
from htsec.errors import (
    ConfigError,
    CredentialError,
    FileSecurityError,
    HtsecError,
    LinkGone,
    LoginFailed,
    NotFound,
)
from htsec.portal.csrf import FIELD, check_csrf
from htsec.portal.dropin import DropIn, provider_of
from htsec.portal.oauth import claim_login, exchange, provider_account, start_login
from htsec.portal.pages import STATIC, PortalRoute, redirect, render, safe_next
from htsec.portal.providers import OAuthProvider, ProviderCache, provider_title
from htsec.portal.sessions import BrowserSession, SessionStore, browser_session, replace_session
from htsec.store.models import AuditEntry
from htsec.web.auth import peer

__all__ = ["router"]

log = logging.getLogger("htsec.portal")

router = APIRouter(route_class=PortalRoute, include_in_schema=False)

Key = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")]
NameP = Annotated[str, Path(min_length=1, max_length=300)]


def _cs(request: Request) -> CredStore:
    cs: CredStore = request.app.state.credstore
    return cs


def _sessions(request: Request) -> SessionStore:
    sessions: SessionStore = request.app.state.portal_sessions
    return sessions


def _dropin(request: Request) -> DropIn:
    d: DropIn = request.app.state.portal_dropin
    return d


def _entry(
    request: Request,
    action: str,
    outcome: str,
    detail: str,
    *,
    user: str | None = None,
    name: TokenName | None = None,
) -> AuditEntry:
    """An audit row of this request, to add to the transaction of what it records."""
    session = getattr(request.state, "portal_session", None)
    return audit_entry(
        actor=f"portal:{session.user}" if session and session.user else "portal",
        action=action,
        outcome=outcome,
        user=user,
        name=name,
        peer=peer(request.scope),
        detail=detail,
    )


def _audit(
    request: Request,
    action: str,
    outcome: str,
    detail: str,
    *,
    user: str | None = None,
    name: TokenName | None = None,
) -> None:
    """An audit row of this request, in its own transaction (a refusal: nothing else is
    written)."""
    with _cs(request).store.session() as s:
        s.add(_entry(request, action, outcome, detail, user=user, name=name))


def _link(request: Request, key: str) -> Link:
    """The live link ``key``: htsec's, or condor_credd's file adopted on first sight."""
    cs = _cs(request)
    try:
        return lookup_link(cs, key)
    except NotFound:
        try:
            link = _dropin(request).adopt(cs, key)
        except (CredentialError, FileSecurityError) as exc:
            _audit(request, "link", "bad-file", str(exc))
            raise NotFound("this link's request cannot be read; run your submit again") from None
        if link is None:
            raise
        return lookup_link(cs, key)


def _provider(request: Request, link: Link, position: int) -> OAuthProvider:
    need = link.needs[position]
    if link.source == "cred-dir":
        ad = _dropin(request).login_at(link.id, position)
        return provider_of(ad)
    providers: ProviderCache = request.app.state.portal_providers
    p = providers.get(need.service)
    if p is None:
        raise ConfigError(
            f"the portal has no OAuth provider {need.service!r}: the administrator sets "
            f"{need.service.upper()}_CLIENT_ID, _CLIENT_SECRET_FILE and the endpoints"
        )
    return p


def _position(link: Link, name: str) -> int:
    for i, need in enumerate(link.needs):
        if name in (need.name.stem, f"{need.service} {need.handle or ''}".rstrip()):
            return i
    raise NotFound(f"this link asks for no credential {name!r}")


def _stored(cs: CredStore, link: Link) -> list[bool]:
    """Which needs are already met in the store, by the credential check's own rule."""
    states = need_states(cs, link.user, link.needs, local=local_services())
    return [st.state == "present" for st in states]


def _next(request: Request, value: str | None, user: str | None) -> str | None:
    """``value`` if it is a path of this portal; otherwise None, and the attempt audited."""
    if value is None or value == "":
        return None
    safe = safe_next(value, "")
    if safe:
        return safe
    _audit(
        request,
        "redirect",
        "denied",
        f"next {value[:200]!r} is not a path of the portal",
        user=user,
    )
    return None


def _key_page(
    request: Request,
    link: Link,
    session: BrowserSession,
    next_path: str | None = None,
    notice: str | None = None,
) -> Response:
    stored = _stored(_cs(request), link)
    items: list[dict[str, Any]] = []
    targets: list[str] = []
    for i, need in enumerate(link.needs):
        done = link.done[i] or stored[i]
        item: dict[str, Any] = {
            "label": need.name.stem,
            "slug": need.name.stem,
            "scopes": sorted(need.scopes),
            "audience": need.audience,
            "done": done,
            "provider_title": provider_title(need.service),
            "error": None,
        }
        if not done:
            try:
                p = _provider(request, link, i)
                item["provider_title"] = p.title
                targets.append(p.authorization_url)
            except HtsecError as exc:
                item["error"] = "not configured" if isinstance(exc, ConfigError) else "unavailable"
        items.append(item)
    expires = datetime.fromtimestamp(link.expires_at, UTC)
    return render(
        request,
        "key.html",
        {
            "title": "Authorise access",
            "user": link.user,
            "key": link.id,
            "needs": items,
            "complete": all(i["done"] for i in items),
            "expires_iso": expires.isoformat(),
            "expires_text": expires.strftime("%H:%M UTC"),
            "next": next_path,
            "notice": notice,
        },
        session=session,
        form_targets=targets,
    )


@functools.cache
def _stylesheet() -> tuple[bytes, str]:
    """The stylesheet and its ETag, read once (it ships with the package)."""
    css = (STATIC / "portal.css").read_bytes()
    return css, '"' + hashlib.sha256(css).hexdigest()[:32] + '"'


@router.get("/static/portal.css")
async def stylesheet(request: Request) -> Response:
    # Not secret, the same for everyone: cached for an hour (each page would fetch it again
    # under the portal's no-store, ~30 ms of every flow), then revalidated by its ETag. From
    # memory, on the event loop: no worker-thread hops to stat and read a file each time.
    css, etag = _stylesheet()
    headers = {"Cache-Control": "public, max-age=3600", "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(css, media_type="text/css", headers=headers)


NextQ = Annotated[str | None, Query(alias="next", max_length=2048)]


@router.get("/key/{key}")
def key_page(key: Key, request: Request, next_: NextQ = None) -> Response:
    """The link's page. ``?next=/path`` (a path of the portal only) is where the browser goes
    after each login; anything else is ignored, with a notice and an audit row."""
    session = browser_session(request)
    fresh = session is None
    if session is None:  # stored with the link's binding below: one commit for both
        session = _sessions(request).new()
        replace_session(request, session)
    done = peek_link(_cs(request), key)
    nxt = _next(request, next_, done.user if done else None)
    notice = (
        "The address to continue to after logging in was ignored: it is not a page of this portal."
        if next_ and nxt is None
        else None
    )
    if done is not None and done.complete and done.session_hash == session.hash:
        return _key_page(request, done, session, nxt, notice)  # back from the last login
    try:
        link = _link(request, key)
        link = open_link(
            _cs(request),
            key,
            session_hash=session.hash,
            session_user=session.user,
            on_bind=partial(_sessions(request).save_in, session=session) if fresh else None,
        )
    except HtsecError:
        if fresh:  # never stored: its error page sets no cookie
            request.state.portal_session = None
        raise
    return _key_page(request, link, session, nxt, notice)


@router.get("/login/{name}")
def login_page(
    name: NameP, request: Request, key: Annotated[str, Query(pattern=r"^[0-9a-f]{64}$")]
) -> Response:
    session = browser_session(request, create=True)
    assert session is not None
    link = _link(request, key)
    link = open_link(_cs(request), key, session_hash=session.hash, session_user=session.user)
    i = _position(link, name)
    p = _provider(request, link, i)
    return render(
        request,
        "login.html",
        {
            "title": f"Log in at {p.title}",
            "provider_title": p.title,
            "label": link.needs[i].name.stem,
            "slug": link.needs[i].name.stem,
            "key": key,
        },
        session=session,
        form_targets=[p.authorization_url],
    )


@router.post("/login/{name}")
def login(
    name: NameP,
    request: Request,
    key: Annotated[str, Form(max_length=64)] = "",
    csrf_token: Annotated[str, Form(alias=FIELD, max_length=128)] = "",
    next_: Annotated[str, Form(alias="next", max_length=2048)] = "",
) -> Response:
    session = check_csrf(request, browser_session(request), csrf_token)
    check_key(key)
    nxt = _next(request, next_, session.user)
    link = _link(request, key)
    link = open_link(_cs(request), key, session_hash=session.hash, session_user=session.user)
    i = _position(link, name)
    if link.done[i]:
        return redirect(request, f"{request.app.state.portal_prefix}/key/{key}", session=session)
    p = _provider(request, link, i)
    started = _entry(
        request, "login", "started", f"to {p.name}", user=link.user, name=link.needs[i].name
    )
    url = start_login(_cs(request), session, link, i, p, nxt, audit=started)
    return redirect(request, url, session=session)


@router.get("/return/{provider}")
def oauth_return(
    provider: NameP,
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
    error_description: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    t0 = time.perf_counter()
    cs = _cs(request)
    session = browser_session(request)
    user: str | None = None
    name: TokenName | None = None
    try:
        claimed = claim_login(cs, session, state, provider)
        assert session is not None
        link = lookup_link(cs, claimed.link_id)
        user = link.user
        need = link.needs[claimed.position]
        name = need.name
        if link.session_hash != session.hash:  # pragma: no cover - claim_login checked it
            raise LinkGone("this link belongs to another browser session")
        if error is not None:
            if error == "access_denied":
                raise LoginFailed(
                    "you declined at the provider, so nothing was stored; to authorise, start "
                    "the login again from your link"
                )
            detail = f" ({error_description})" if error_description else ""
            raise LoginFailed(f"the provider answered {error}{detail}; nothing was stored")
        if not code:
            raise LoginFailed("the provider sent you back without a code; start the login again")
        p = _provider(request, link, claimed.position)
        if p.redirect_uri != claimed.redirect_uri:
            raise LoginFailed("the provider's return address changed during the login")
        t1 = time.perf_counter()
        token = exchange(p, claimed, code, need)
        account = provider_account(p, token)
        t2 = time.perf_counter()
        ok = _entry(
            request,
            "login",
            "ok",
            f"at {p.name} as {account or 'an account the provider did not name'}",
            user=link.user,
            name=need.name,
        )
        _store(request, link, claimed.position, p, token, ok)
    except LoginFailed as exc:
        _audit(request, "login", "failed", str(exc), user=user, name=name)
        raise
    except HtsecError as exc:
        _audit(request, "login", exc.code, str(exc), user=user, name=name)
        raise
    t3 = time.perf_counter()
    log.info(
        "portal: %s stored %s (htsec %.1f ms, provider %.1f ms)",
        link.user,
        need.name.stem,
        1000 * ((t1 - t0) + (t3 - t2)),
        1000 * (t2 - t1),
    )
    back = safe_next(claimed.next_path, "") or f"{request.app.state.portal_prefix}/key/{link.id}"
    return redirect(request, back, session=session)


def _store(
    request: Request,
    link: Link,
    position: int,
    p: OAuthProvider,
    token: dict[str, Any],
    ok: AuditEntry,
) -> None:
    """The new credential into the store (sealed), the credential directory, the link's need
    done and the ``ok`` audit row: one transaction (if the files cannot be written, nothing
    is stored)."""
    cs = _cs(request)
    need = link.needs[position]
    refresh = token.get("refresh_token")
    expires_in = token.get("expires_in")
    expires_at = (
        int(time.time()) + int(expires_in)
        if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool)
        else None
    )
    dropin = _dropin(request)
    requested = dropin.login_at(link.id, position) if link.source == "cred-dir" else None
    used_up = False

    def with_it(s: Session) -> None:
        nonlocal used_up
        if dropin.enabled:
            dropin.write_files(link.user, need, token, p, requested)
        used_up = complete_need_in(s, link.id, position)
        s.add(ok)

    cs.put(
        link.user,
        need.service,
        need.handle,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        access_token=str(token["access_token"]),
        expires_at=expires_at,
        token_type=str(token.get("token_type") or "bearer"),
        scopes=sorted(need.scopes),
        audience=need.audience,
        provider=need.service,
        client_id=p.client_id,
        client_secret=p.client_secret,
        token_url=p.token_url,
        actor=f"portal:{link.user}",
        peer=peer(request.scope),
        source="cred-dir" if link.source == "cred-dir" else None,
        also=with_it,
    )
    if used_up and link.source == "cred-dir":
        dropin.remove(link.id)
    wake_credmon(request)
