"""Browser sessions of the portal, kept in the store so any portal process serves any request.

The cookie ``__Host-htsec-portal`` (``Secure``, ``HttpOnly``, ``SameSite=Lax``, ``Path=/``, no
``Domain``: the ``__Host-`` prefix makes browsers enforce the last three) holds 32 random bytes;
the ``portal_sessions`` row is keyed by their SHA-256, so the database holds no usable cookie.
A session lives :data:`IDLE` seconds after its last request and at most :data:`LIFETIME`; it
carries its CSRF token (:mod:`htsec.portal.csrf`) and, once someone logs in to the dashboard,
their user name (:meth:`SessionStore.log_in` gives the browser a new id at that moment).

Routes ask for the session with :func:`browser_session` (``create=True`` when they start
something) and hand it to :func:`htsec.portal.pages.render` or :func:`~htsec.portal.pages.redirect`,
which set the cookie when it is new.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, replace
from typing import cast

from fastapi import Request, Response
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from htsec.store import Store
from htsec.store.models import PortalSession

__all__ = [
    "COOKIE",
    "IDLE",
    "LIFETIME",
    "BrowserSession",
    "SessionStore",
    "browser_session",
    "replace_session",
    "set_cookie",
]

COOKIE = "__Host-htsec-portal"
#: Seconds a session lives after its last request, and at most.
IDLE = 3600
LIFETIME = 12 * 3600
_TOUCH_EVERY = 60
_PURGE_EVERY = 60.0
_T = cast(Table, PortalSession.__table__)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, repr=False)
class BrowserSession:
    """One browser's session. ``id`` is the cookie value (secret); ``hash`` names it in the
    store and in links and logins bound to it."""

    id: str
    csrf: str
    user: str | None
    created_at: int
    expires_at: int
    new: bool = False

    @property
    def hash(self) -> str:
        return _hash(self.id)

    def __repr__(self) -> str:
        return f"BrowserSession(user={self.user!r}, new={self.new})"


class SessionStore:
    """Sessions in the store's ``portal_sessions`` table."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, *, user: str | None = None) -> BrowserSession:
        session = self.new(user=user)
        with self.store.session() as s:
            self.save_in(s, session)
        return session

    def new(self, *, user: str | None = None) -> BrowserSession:
        """A session not yet stored: :meth:`save_in` stores it in the transaction of the first
        thing it is used for (a link bound to it), so that both are written or neither."""
        now = int(time.time())
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        return BrowserSession(sid, csrf, user, now, now + LIFETIME, new=True)

    def save_in(self, s: Session, session: BrowserSession) -> None:
        """Store :meth:`new`'s ``session`` inside the store session ``s``."""
        # Sessions expire by themselves (load() checks); their rows go when a new one is
        # made, at most once a minute (a scan of the table).
        now = session.created_at
        if self.store.due("portal_sessions.purge", _PURGE_EVERY):
            s.execute(delete(_T).where((_T.c.expires_at <= now) | (_T.c.seen_at <= now - IDLE)))
        s.execute(
            insert(_T).values(
                id_hash=session.hash,
                csrf=session.csrf,
                user=session.user,
                created_at=now,
                seen_at=now,
                expires_at=session.expires_at,
            )
        )

    def load(self, session_id: str | None) -> BrowserSession | None:
        """The live session of a cookie value, or None (unknown, idle too long, expired)."""
        if not session_id or len(session_id) > 128:
            return None
        h = _hash(session_id)
        with self.store.engine.connect() as conn:
            row = conn.execute(select(_T).where(_T.c.id_hash == h)).first()
        now = int(time.time())
        if row is None or now >= row.expires_at or now >= row.seen_at + IDLE:
            return None
        if now - row.seen_at >= _TOUCH_EVERY:
            with self.store.session() as s:
                s.execute(update(_T).where(_T.c.id_hash == h).values(seen_at=now))
        return BrowserSession(session_id, row.csrf, row.user, row.created_at, row.expires_at)

    def log_in(self, session: BrowserSession, user: str) -> BrowserSession:
        """``session`` now belongs to ``user``: a new id and CSRF token (the old id, which may
        have been planted before the login, is gone)."""
        self.end(session)
        return self.create(user=user)

    def end(self, session: BrowserSession) -> None:
        with self.store.session() as s:
            s.execute(delete(_T).where(_T.c.id_hash == session.hash))

    def purge(self, now: float | None = None) -> int:
        """Delete expired and idle sessions; returns how many."""
        t = int(time.time() if now is None else now)
        with self.store.session() as s:
            n = s.execute(
                delete(_T).where((_T.c.expires_at <= t) | (_T.c.seen_at <= t - IDLE))
            ).rowcount  # type: ignore[attr-defined]
        return int(n)


def _sessions(request: Request) -> SessionStore:
    sessions: SessionStore = request.app.state.portal_sessions
    return sessions


def browser_session(request: Request, *, create: bool = False) -> BrowserSession | None:
    """The request's session; a new one when it has none and ``create`` (its cookie is set by
    whoever renders the answer: :func:`set_cookie`)."""
    cached: BrowserSession | None = getattr(request.state, "portal_session", None)
    if cached is not None:
        return cached
    session = _sessions(request).load(request.cookies.get(COOKIE))
    if session is None and create:
        session = _sessions(request).create()
    request.state.portal_session = session
    return session


def replace_session(request: Request, session: BrowserSession) -> None:
    """Use ``session`` for the rest of this request (after :meth:`SessionStore.log_in`)."""
    request.state.portal_session = replace(session, new=True)


def set_cookie(response: Response, session: BrowserSession | None) -> None:
    """Set the session cookie on ``response`` if the session is new."""
    if session is None or not session.new:
        return
    response.set_cookie(
        COOKIE,
        session.id,
        max_age=LIFETIME,
        path="/",
        secure=True,
        httponly=True,
        samesite="lax",
    )
