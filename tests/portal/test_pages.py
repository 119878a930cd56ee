"""What every portal page carries (htsec.portal.pages, .sessions): the strict CSP and the other
security headers, the ``__Host-`` session cookie kept in the store; and the providers' presets
(htsec.portal.providers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text

from htsec.config import Settings
from htsec.portal.providers import load_oauth_providers
from htsec.portal.sessions import COOKIE, IDLE
from tests.portal.conftest import Portal
from tests.portal.rig import PORTAL


def test_the_link_page_carries_the_security_headers(portal: Portal, oidc: object) -> None:
    r = portal.browser().open(portal.link())
    assert r.status_code == 200
    h = r.headers
    issuer = urlsplit(portal.issuer)
    assert h["content-security-policy"] == (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"form-action 'self' {issuer.scheme}://{issuer.netloc}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-store" and h["referrer-policy"] == "same-origin"
    assert "<script" not in r.text
    cookie = h["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite"} <= attrs and "domain" not in attrs
    assert "samesite=lax" in cookie.lower() and "path=/" in cookie.lower()


def test_error_pages_carry_them_too(portal: Portal) -> None:
    r = portal.browser().client.get(f"/key/{'0' * 64}")
    assert r.status_code == 404 and "content-security-policy" in r.headers
    assert r.headers["content-type"].startswith("text/html")


def test_the_session_is_a_store_row_keyed_by_a_hash(portal: Portal) -> None:
    b = portal.browser()
    b.open(portal.link())
    sid = b.client.cookies[COOKIE]  # type: ignore[attr-defined]
    with portal.creds.store.engine.connect() as conn:
        rows = conn.execute(text("SELECT id_hash, csrf FROM portal_sessions")).all()
    assert len(rows) == 1 and sid not in rows[0][0] and len(rows[0][0]) == 64


def test_idle_sessions_are_not_served_and_are_purged_once_a_minute(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = portal.app.state.portal_sessions
    old = sessions.create()
    with portal.creds.store.session() as s:
        s.execute(
            text("UPDATE portal_sessions SET seen_at = :t"), {"t": int(time.time()) - IDLE - 1}
        )
    assert sessions.load(old.id) is None
    sessions.create()  # within the minute of the first: no table scan
    with portal.creds.store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM portal_sessions")).scalar_one() == 2
    later = monotonic() + 61
    monkeypatch.setattr("htsec.store.db.monotonic", lambda: later)
    sessions.create()
    with portal.creds.store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM portal_sessions")).scalar_one() == 2


def test_presets_ask_for_refresh_tokens(
    portal_env: Callable[..., Settings], tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    portal_env(
        _CONDOR_GDRIVE_CLIENT_ID="g-client",
        _CONDOR_ONEDRIVE_CLIENT_ID="m-client",
        _CONDOR_BOX_CLIENT_ID="b-client",
        _CONDOR_BOX_RETURN_URL_SUFFIX="/return/box",
        _CONDOR_HALF_CLIENT_ID="no-endpoints",
    )
    providers = load_oauth_providers(PORTAL)
    assert "half" not in providers  # neither endpoints nor a preset: left out, with a warning
    gdrive, onedrive, box = providers["gdrive"], providers["onedrive"], providers["box"]
    assert gdrive.authorization_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert dict(gdrive.params) == {"access_type": "offline", "prompt": "consent"}
    assert onedrive.scopes == ("offline_access",)
    assert box.redirect_uri == f"{PORTAL}/return/box"
    assert gdrive.redirect_uri == f"{PORTAL}/return/gdrive"
    assert "client_secret" not in repr(gdrive) or "[secure]" in repr(gdrive)


def test_google_login_asks_for_offline_access(
    portal_env: Callable[..., Settings],
) -> None:
    from starlette.testclient import TestClient

    from htsec.creds.links import Need, create_link
    from htsec.server import create_app
    from htsec.tokens.authority import Authority
    from tests.portal.rig import Browser, login_form

    settings = portal_env(_CONDOR_GDRIVE_CLIENT_ID="g-client")
    authority = Authority(settings)
    try:
        app = create_app(settings, authority)
        link = create_link(
            app.state.credstore,
            user="alice",
            needs=[Need("gdrive", None, frozenset({"https://www.googleapis.com/auth/drive.file"}))],
            ttl=900,
        )
        b = Browser(TestClient(app, base_url=PORTAL), "https://accounts.google.com")
        page = b.open(f"{PORTAL}/key/{link.id}")
        action, fields = login_form(page, "gdrive")
        start = b.client.post(action, data=fields, follow_redirects=False)
        loc = urlsplit(start.headers["location"])
        q = parse_qs(loc.query)
        assert loc.netloc == "accounts.google.com"
        assert q["access_type"] == ["offline"] and q["prompt"] == ["consent"]
        assert q["code_challenge_method"] == ["S256"]
        assert (
            "form-action 'self' https://accounts.google.com"
            in page.headers["content-security-policy"]
        )
    finally:
        authority.store.close()


def test_the_stylesheet_is_served_from_memory_and_revalidated_by_its_etag(
    portal: Portal, monkeypatch: pytest.MonkeyPatch
) -> None:
    from htsec.portal import pages

    client = portal.browser().client
    css = client.get("/static/portal.css")
    assert css.status_code == 200 and css.content == (pages.STATIC / "portal.css").read_bytes()
    assert css.headers["content-type"].startswith("text/css")
    assert "default-src 'none'" in css.headers["content-security-policy"]
    etag = css.headers["etag"]
    # read once, not per request
    monkeypatch.setattr("htsec.portal.routes.STATIC", Path("/nonexistent"))
    again = client.get("/static/portal.css", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag and not again.content
    assert client.get("/static/portal.css").content == css.content
