"""CSRF protection of every portal form: one token per browser session, in a hidden field.

Templates write ``{{ csrf_field() }}`` inside each ``<form method="post">``; the route that
takes the form calls :func:`check_csrf` first. The token is compared in constant time with the
one of the session in the store, and a request whose ``Origin`` (or, without one, ``Referer``)
names another origin is refused too. Each refusal is audited, with nothing stored.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import Request
from markupsafe import Markup, escape

from htsec.errors import Forbidden
from htsec.portal.sessions import BrowserSession
from htsec.web.auth import peer

__all__ = ["FIELD", "check_csrf", "csrf_field"]

#: The form field holding the token.
FIELD = "csrf_token"


def csrf_field(session: BrowserSession | None) -> Markup:
    """The hidden ``<input>`` carrying ``session``'s token (empty without a session)."""
    if session is None:
        return Markup("")
    return Markup('<input type="hidden" name="{}" value="{}">').format(FIELD, escape(session.csrf))


def _origin(url: str) -> tuple[str, str]:
    u = urlsplit(url)
    return u.scheme.lower(), u.netloc.lower()


def _allowed(request: Request) -> set[tuple[str, str]]:
    """This server's origin as the request names it, and the portal's public one."""
    out = {_origin(str(request.base_url))}
    base = getattr(request.app.state, "portal_base", None)
    if base:
        out.add(_origin(base))
    return out


def check_csrf(
    request: Request, session: BrowserSession | None, token: str | None
) -> BrowserSession:
    """``session`` if ``token`` is its CSRF token and the request comes from this origin.

    :raises Forbidden: otherwise (the caller's error page says to reload and try again).
    """
    reason = None
    if session is None:
        reason = "no portal session (cookies disabled, or it expired)"
    elif not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        reason = "missing or wrong CSRF token"
    else:
        sent = request.headers.get("origin") or request.headers.get("referer")
        if sent and (sent == "null" or _origin(sent) not in _allowed(request)):
            reason = f"form posted from another origin ({_origin(sent)[1]})"
    if reason is not None:
        request.app.state.credstore.audit(
            actor=(session.user if session else None) or "browser",
            action="csrf",
            outcome="denied",
            user=session.user if session else None,
            peer=peer(request.scope),
            detail=reason,
        )
        raise Forbidden(f"this form could not be accepted: {reason}. Reload the page and try again")
    assert session is not None
    return session
