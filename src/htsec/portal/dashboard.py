"""The dashboard at the portal's ``/``: a user's credentials, and for administrators the
issued ID tokens, pending token requests and the credmon's health.

One logs in by pasting an HTCondor ID token (``htsec token create``, ``condor_token_fetch``).
It is verified by the app's own verifier, exactly as the API verifies a ``Bearer`` token,
and kept for the browser session sealed (:class:`htsec.creds.crypto.Sealer`) under that
session's name in the cookie :data:`COOKIE`: every later request verifies it again, so a
revoked or expired token ends the dashboard session at once, and the cookie opens with no
other session. What a user may do is what the token grants, decided by
:func:`htsec.web.auth.require` as in the API: ``READ`` to see one's credentials, ``WRITE`` to
re-authorise or delete them, ``ADMINISTRATOR`` for the rest. One may also sign in at an
OpenID provider (:mod:`htsec.portal.signin`): that user's own credentials only (``READ`` and
``WRITE``). Every form posts with the session's CSRF token
(:func:`htsec.portal.csrf.check_csrf`), is audited whether done or refused, and answers with a
303 back to ``/`` and a fixed message (nothing a request sent is echoed).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from markupsafe import Markup

from htsec import _time
from htsec.authz import Perm, credential_owner, granted, grants, in_order
from htsec.creds.crypto import aad_for
from htsec.creds.links import Need, create_link, link_url, portal_url
from htsec.creds.store import CredStore
from htsec.errors import Forbidden, HtsecError, TokenRejected
from htsec.portal.csrf import check_csrf
from htsec.portal.pages import PortalRoute, redirect, render
from htsec.portal.sessions import BrowserSession, SessionStore, browser_session, replace_session
from htsec.portal.signin import PENDING, PENDING_LIFETIME, OidcUser, finish, login_provider, start
from htsec.tokens.api import token_requests
from htsec.web.auth import peer, require
from htsec.web.verifier import VerifiedCaller

__all__ = ["COOKIE", "MESSAGES", "router"]

router = APIRouter(route_class=PortalRoute)
log = logging.getLogger("htsec.portal")
#: Marks a sealed cookie of a user signed in at the OpenID provider (a token never starts so).
_OIDC = "oidc:"

#: The cookie holding the session's sealed ID token.
COOKIE = "__Host-htsec-dashboard"
_MAX_TOKEN = 8192
_MAX_COOKIE = 16384
#: What ``?done=`` may show after a form (fixed texts: the query never reaches the page).
MESSAGES = {
    "login": "Signed in.",
    "deleted": "The credential was deleted.",
    "revoked": "The token was revoked.",
    "approved": "The token request was approved.",
    "denied": "The token request was denied.",
}
Text = Annotated[str, Form(max_length=256)]
Handle = Annotated[str, Form(max_length=256)]
Csrf = Annotated[str, Form(alias="csrf_token", max_length=128)]  # checked: check_csrf


@dataclass(frozen=True)
class Viewer:
    """Who looks at the dashboard: the verified token and the user whose credentials it owns."""

    token: VerifiedCaller
    user: str | None

    @property
    def subject(self) -> str:
        return self.token.subject

    @property
    def admin(self) -> bool:
        return grants(self.token, Perm.ADMINISTRATOR)


def _aad(session: BrowserSession) -> bytes:
    return aad_for("portal_sessions", "id_token", session.hash)


def _creds(request: Request) -> CredStore:
    cs: CredStore = request.app.state.credstore
    return cs


def _uid_domain(request: Request) -> str:
    domain: str = request.app.state.settings.uid_domain
    return domain


def viewer(request: Request) -> tuple[BrowserSession | None, Viewer | None]:
    """The request's session and, when someone logged in to it with a token that still
    verifies, who that is."""
    session = browser_session(request)
    sealed = request.cookies.get(COOKIE)
    if session is None or session.user is None or not sealed or len(sealed) > _MAX_COOKIE:
        return session, None
    domain = _uid_domain(request)
    try:
        raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        token = _creds(request).sealer.open(raw, _aad(session))
        if token.startswith(_OIDC):  # signed in at the OpenID provider (htsec.portal.signin)
            user = token.removeprefix(_OIDC)
            if user != session.user:
                return session, None
            return session, Viewer(OidcUser(f"{user}@{domain}"), user)
        verified = request.app.state.verifiers.get().verify(token)
    except (binascii.Error, ValueError, HtsecError):
        return session, None  # another session's cookie, a revoked or expired token
    return session, Viewer(verified, credential_owner(verified.subject, domain))


def _require_viewer(request: Request, csrf: str) -> Viewer:
    """The logged-in viewer of a form post whose CSRF token is right; else Forbidden."""
    session, who = viewer(request)
    check_csrf(request, session, csrf)
    if who is None:
        _creds(request).audit(
            actor=(session.user if session else None) or "browser",
            action="dashboard",
            outcome="denied",
            peer=peer(request.scope),
            detail="a form posted without a signed-in dashboard session",
        )
        raise Forbidden("your dashboard session has ended (or the token was revoked); log in")
    return who


def _own(request: Request, who: Viewer, perm: Perm, what: str) -> str:
    require(who.token, perm, to=what)
    if who.user is None:
        domain = _uid_domain(request)
        raise Forbidden(f"{who.subject} owns no credentials: they belong to user@{domain}")
    return who.user


# -- pages -----------------------------------------------------------------------------------


@router.get("/")
def dashboard(request: Request, done: str | None = None) -> Response:
    session, who = viewer(request)
    if who is None:
        session = session or browser_session(request, create=True)
        page: dict[str, Any] = {"title": "Sign in", "uid_domain": _uid_domain(request)}
        targets = []
        try:
            found = login_provider(request)
        except HtsecError as exc:  # a misconfigured provider must not stop token sign-in
            log.warning("dashboard: OpenID sign-in is off: %s", exc)
            found = None
        if found is not None:
            page["oidc_title"] = found[0].title
            targets.append(found[0].authorization_url)
        return render(request, "dashboard_login.html", page, session=session, form_targets=targets)
    ctx: dict[str, Any] = {
        "title": "Dashboard",
        "viewer": who,
        "grants": in_order(granted(who.token.authorizations)),
        "message": MESSAGES.get(done or ""),
        "now": int(time.time()),
        "when": _when,
        "iso": _iso,
    }
    if who.user is not None and grants(who.token, Perm.READ):
        ctx["credentials"] = _creds(request).credentials(who.user)
    if who.admin:
        ctx["tokens"] = _issued_tokens(request)
        ctx["requests"] = token_requests(request).pending()
        ctx["health"] = _health(request)
    return render(request, "dashboard.html", ctx, session=session)


def _when(ts: float | None) -> Markup:
    """A time to the minute, in htsec's one format (``2026-01-02 03:04 UTC``), breaking
    only between the date and the time."""
    if ts is None:
        return Markup("never")
    day, clock = _time.utc_text(ts)[:16].split(" ")
    return Markup('<span class="nowrap">{}</span> <span class="nowrap">{} UTC</span>').format(
        day, clock
    )


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _issued_tokens(request: Request, limit: int = 200) -> list[dict[str, Any]]:
    """The newest ``limit`` tokens that have not expired, each with its state."""
    registry = request.app.state.authority.registry
    now = int(time.time())
    revoked = registry.revocations()
    rows = []
    for rec in registry.issued(live_at=now)[-limit:][::-1]:
        claims = {k: v for k, v in rec.__dict__.items() if v is not None}
        why = revoked.check(claims)
        rows.append({**rec.__dict__, "state": "revoked" if why else "live"})
    return rows


def _health(request: Request) -> dict[str, Any]:
    """What ``/v1/health`` reports for each part (the credmon's above all)."""
    out: dict[str, Any] = {}
    for name, check in request.app.state.health_checks.items():
        healthy, detail = check()
        shown = dict(detail)
        for key, value in detail.items():  # times since the epoch, as people read them
            if (key.startswith("last_") or key.endswith("_at")) and isinstance(value, int | float):
                shown[key] = _time.utc_text(value)
        out[name] = {"healthy": healthy, "detail": shown}
    return out


# -- logging in and out ----------------------------------------------------------------------


@router.post("/dashboard/login")
def log_in(
    request: Request,
    csrf: Csrf = "",
    token: Annotated[str, Form(max_length=_MAX_TOKEN)] = "",
) -> Response:
    session = check_csrf(request, browser_session(request), csrf)
    raw = "".join(token.split())
    if not raw:
        raise TokenRejected("no_token", "paste an ID token to sign in")
    verified = request.app.state.verifiers.get().verify(raw)  # TokenRejected: an error page
    user = credential_owner(verified.subject, _uid_domain(request))
    response = _signed_in(request, session, user or verified.subject, raw)
    _creds(request).audit(
        actor=verified.subject,
        action="dashboard-login",
        outcome="ok",
        user=user,
        peer=peer(request.scope),
        detail=f"token {verified.kid}",
    )
    return response


def _signed_in(request: Request, old: BrowserSession, user: str, kept: str) -> Response:
    """A new session for ``user`` (the old id is gone) holding ``kept`` sealed in
    :data:`COOKIE`; the 303 to the dashboard."""
    sessions: SessionStore = request.app.state.portal_sessions
    session = sessions.log_in(old, user)
    replace_session(request, session)
    session = browser_session(request) or session  # marked new: its cookie is set
    sealed = _creds(request).sealer.seal(kept, _aad(session))
    response = redirect(request, f"{request.app.state.portal_prefix}/?done=login", session=session)
    response.set_cookie(
        COOKIE,
        base64.urlsafe_b64encode(sealed).decode().rstrip("="),
        max_age=int(session.expires_at - time.time()),
        path="/",
        secure=True,
        httponly=True,
        # Lax, as the session's: after the OpenID provider's redirect the browser treats the
        # whole redirect chain as cross-site and would not send a Strict cookie to /, so the
        # user would land on the sign-in page. Cross-site posts still carry no cookie.
        samesite="lax",
    )
    return response


@router.post("/dashboard/oidc")
def oidc_start(request: Request, csrf: Csrf = "") -> Response:
    """Off to the OpenID provider (:mod:`htsec.portal.signin`)."""
    session = check_csrf(request, browser_session(request), csrf)
    url, pending = start(request, session)
    response = redirect(request, url, session=session)
    response.set_cookie(
        PENDING,
        pending,
        max_age=PENDING_LIFETIME,
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",  # sent on the provider's redirect back (a top-level GET)
    )
    return response


@router.get("/dashboard/return")
def oidc_return(
    request: Request,
    code: Annotated[str | None, Query(max_length=4096)] = None,
    state: Annotated[str | None, Query(max_length=512)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
) -> Response:
    session = browser_session(request)
    if session is None:
        raise Forbidden("no portal session (cookies disabled, or it expired); sign in again")
    try:
        user = finish(request, session, request.cookies.get(PENDING), code, state, error)
    except HtsecError as exc:
        _creds(request).audit(
            actor="browser",
            action="dashboard-login",
            outcome="denied",
            peer=peer(request.scope),
            detail=str(exc)[:200],
        )
        raise
    response = _signed_in(request, session, user, _OIDC + user)
    response.delete_cookie(PENDING, path="/", secure=True, httponly=True, samesite="lax")
    _creds(request).audit(
        actor=f"{user}@{_uid_domain(request)}",
        action="dashboard-login",
        outcome="ok",
        user=user,
        peer=peer(request.scope),
        detail="openid connect",
    )
    return response


@router.post("/dashboard/logout")
def log_out(request: Request, csrf: Csrf = "") -> Response:
    session = check_csrf(request, browser_session(request), csrf)
    sessions: SessionStore = request.app.state.portal_sessions
    sessions.end(session)
    response = redirect(request, f"{request.app.state.portal_prefix}/", session=None)
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="lax")
    return response


def _back(request: Request, done: str) -> Response:
    return redirect(request, f"{request.app.state.portal_prefix}/?done={done}")


# -- the user's credentials ------------------------------------------------------------------


@contextlib.contextmanager
def _audited(request: Request, who: Viewer, action: str, detail: str) -> Iterator[None]:
    """One audit row for the form's action, refused (the error's code) or done."""
    outcome = "ok"
    try:
        yield
    except HtsecError as exc:
        outcome = "denied" if isinstance(exc, Forbidden) else exc.code
        detail = f"{detail}: {exc}"
        raise
    finally:
        _creds(request).audit(
            actor=who.subject,
            action=f"dashboard-{action}",
            outcome=outcome,
            user=who.user,
            peer=peer(request.scope),
            detail=detail[:300],
        )


@router.post("/dashboard/credentials/delete")
def delete_credential(
    request: Request, service: Text, handle: Handle = "", csrf: Csrf = ""
) -> Response:
    who = _require_viewer(request, csrf)
    with _audited(request, who, "delete", f"{service} {handle}".strip()):
        user = _own(request, who, Perm.WRITE, "delete credentials")
        cs = _creds(request)
        cs.info(user, service, handle or None)  # NotFound: an error page
        cs.delete(user, service, handle or None, actor=who.subject, peer=peer(request.scope))
    return _back(request, "deleted")


@router.post("/dashboard/credentials/reauthorize")
def reauthorize(request: Request, service: Text, handle: Handle = "", csrf: Csrf = "") -> Response:
    """A new one-time link for the credential (same scopes and audience), opened at once."""
    who = _require_viewer(request, csrf)
    with _audited(request, who, "reauthorize", f"{service} {handle}".strip()):
        user = _own(request, who, Perm.WRITE, "re-authorise credentials")
        cs = _creds(request)
        info = cs.info(user, service, handle or None)
        need = Need(info.service, info.handle, frozenset(info.scopes), info.audience or None)
        link = create_link(cs, user=user, needs=[need], actor=who.subject)
    return redirect(request, link_url(portal_url(request.app.state.settings), link.id))


# -- administrators --------------------------------------------------------------------------


@router.post("/dashboard/tokens/revoke")
def revoke_token(request: Request, jti: Text, csrf: Csrf = "") -> Response:
    who = _require_viewer(request, csrf)
    with _audited(request, who, "revoke", f"token {jti}"):
        require(who.token, Perm.ADMINISTRATOR, to="revoke tokens")
        request.app.state.authority.registry.revoke(
            kind="jti", value=jti, by=who.subject, reason=f"revoked by {who.subject} (dashboard)"
        )
    return _back(request, "revoked")


@router.post("/dashboard/requests/decide")
def decide_request(
    request: Request,
    request_id: Annotated[str, Form(alias="id", max_length=128)],
    decision: Annotated[str, Form(pattern="^(approve|deny)$")],
    csrf: Csrf = "",
) -> Response:
    who = _require_viewer(request, csrf)
    approve = decision == "approve"
    with _audited(request, who, decision, f"token request {request_id}"):
        require(who.token, Perm.ADMINISTRATOR, to="decide token requests")
        token_requests(request).decide(request_id, approve=approve, by=who.subject)
    return _back(request, "approved" if approve else "denied")
