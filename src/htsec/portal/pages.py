"""How the portal answers: Jinja2 templates, security headers, error pages, safe ``next``.

Every portal route is a :class:`PortalRoute` (``APIRouter(route_class=PortalRoute)``): its
answer gets :func:`security_headers`, and an :class:`~htsec.errors.HtsecError` (or an invalid
parameter) becomes the ``error.html`` page with the error's status and message -- never a
traceback, never JSON. Pages come from ``templates/`` (autoescaped), extend ``base.html`` and
use the one stylesheet ``static/portal.css``; no script runs anywhere in the portal.

The Content-Security-Policy allows nothing but the portal's own stylesheet and images, forms
posting to the portal itself (and, on a page whose form leads to a provider, that provider's
origin: browsers apply ``form-action`` to the redirect that follows), and no framing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from htsec.errors import HtsecError
from htsec.portal.csrf import csrf_field
from htsec.portal.sessions import BrowserSession, browser_session, set_cookie

__all__ = [
    "STATIC",
    "TEMPLATES",
    "PortalRoute",
    "error_page",
    "origin_of",
    "redirect",
    "render",
    "safe_next",
    "security_headers",
]

log = logging.getLogger("htsec.portal")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

_ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, else None."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        return None
    return f"{u.scheme}://{u.netloc}"


def security_headers(response: Response, form_targets: Iterable[str] = ()) -> None:
    """The portal's security headers on ``response`` (a route's own value is kept).

    ``form_targets`` are URLs a form on this page leads to through a redirect (a provider's
    authorization endpoint): their origins join ``form-action``."""
    targets = sorted({o for u in form_targets if (o := origin_of(u))})
    form_action = " ".join(["'self'", *targets])
    csp = (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"form-action {form_action}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    headers = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        # The page URL holds the link's secret id: never sent to another origin (a provider).
        # Not "no-referrer": with it browsers send "Origin: null" on every form post (Fetch,
        # "append a request Origin header"), and the CSRF check refuses the portal's own forms.
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
        "Strict-Transport-Security": "max-age=31536000",
        "Cache-Control": "no-store",
    }
    for name, value in headers.items():
        response.headers.setdefault(name, value)


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    session: BrowserSession | None = None,
    status: int = 200,
    form_targets: Iterable[str] = (),
) -> HTMLResponse:
    """``template`` rendered with ``context``; the session's cookie set when it is new.

    Templates see ``csrf_field()`` (the session's hidden CSRF input), ``prefix`` (the
    portal's path, for links) and ``session``."""
    session = session or browser_session(request)
    ctx = {
        "prefix": request.app.state.portal_prefix,
        "session": session,
        "csrf_field": lambda: csrf_field(session),
        **(context or {}),
    }
    html = _ENV.get_template(template).render(ctx)
    response = HTMLResponse(html, status_code=status)
    set_cookie(response, session)
    security_headers(response, form_targets)
    return response


def redirect(
    request: Request, url: str, *, session: BrowserSession | None = None
) -> RedirectResponse:
    """A 303 to ``url`` (an absolute provider URL or a path of the portal)."""
    response = RedirectResponse(url, status_code=303)
    set_cookie(response, session or browser_session(request))
    security_headers(response)
    return response


def error_page(request: Request, exc: HtsecError) -> HTMLResponse:
    """The page of an error: its status, a title and the message (never a traceback)."""
    titles = {
        400: "The request could not be completed",
        403: "Not allowed",
        404: "Not found",
        409: "Not possible now",
        410: "This link can no longer be used",
        502: "The provider did not answer as expected",
        503: "Try again later",
    }
    status = exc.status if 400 <= exc.status < 600 else 500
    title = titles.get(status, "Something went wrong")
    return render(
        request,
        "error.html",
        {"title": title, "message": str(exc), "code": exc.code},
        status=status,
    )


_UNSAFE_NEXT = re.compile(r"[\x00-\x20\x7f\\]")


def safe_next(value: str | None, default: str) -> str:
    """``value`` if it is a path on this site (``/...``, not ``//host`` nor ``/\\host``, no
    scheme, no control characters), else ``default``: never an open redirect."""
    if not value or len(value) > 1024 or _UNSAFE_NEXT.search(value):
        return default
    u = urlsplit(value)
    if u.scheme or u.netloc or not value.startswith("/") or value.startswith("//"):
        return default
    return value


class PortalRoute(APIRoute):
    """A route whose errors are pages and whose answers carry :func:`security_headers`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await inner(request)
            except HtsecError as exc:
                return error_page(request, exc)
            except RequestValidationError:
                from htsec.errors import UsageError

                return error_page(request, UsageError("this address is not one the portal serves"))
            security_headers(response)
            return response

        return handler
