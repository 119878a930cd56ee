"""The portal's authorization-code flow (htsec.portal.routes, .oauth) against the real
oidc-provider: link page, PKCE login at the provider, refresh token stored sealed, link used up."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from sqlalchemy import event, text

from htsec.portal.sessions import COOKIE
from tests.portal.conftest import Portal
from tests.portal.rig import heading, login_form


def test_a_link_ends_with_the_credential_stored(portal: Portal) -> None:
    url = portal.link()
    b = portal.browser()
    start = b.start(url)
    assert start.status_code == 303
    q = parse_qs(urlsplit(start.headers["location"]).query)
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    assert q["redirect_uri"] == ["https://testserver/return/rig"]
    back = b.come_back(b.to_provider_and_back(start))
    assert back.status_code == 303, back.text
    assert back.headers["location"] == urlsplit(url).path
    info = portal.creds.info("alice", "rig")
    assert info.has_refresh_token and info.has_access_token
    assert sorted(info.scopes) == ["openid", "profile"]
    # the provider account attached is in the audit trail (the userinfo endpoint's answer)
    ok = [r for r in portal.audit("login") if r["outcome"] == "ok"]
    assert ok and ok[0]["detail"] == "at rig as alice" and ok[0]["user"] == "alice"
    done = b.open(url)
    assert done.status_code == 200 and heading(done) == "All set", done.text
    again = portal.browser().open(url)
    assert again.status_code == 410 and "already used" in again.text


def test_a_link_of_two_credentials_with_an_audience(portal: Portal) -> None:
    """Two credentials of one provider (one with a handle, a resource server's audience and its
    scopes): each its own login; the link is used up after the second."""
    from htsec.creds.links import Need
    from tests.oidc import WLCG_AUDIENCE

    wlcg = Need("rig", "wlcg", frozenset({"storage.read:/"}), WLCG_AUDIENCE)
    plain = Need("rig", None, frozenset({"openid"}))
    url = portal.link(needs=(plain, wlcg))
    b = portal.browser()
    assert b.authorise(url, "rig").status_code == 303
    page = b.open(url)
    assert page.status_code == 200 and "Stored" in page.text and heading(page) != "All set"
    start = b.start(url, "rig_wlcg")
    q = parse_qs(urlsplit(start.headers["location"]).query)
    assert q["resource"] == [WLCG_AUDIENCE]
    assert b.come_back(b.to_provider_and_back(start)).status_code == 303
    assert heading(b.open(url)) == "All set"
    info = portal.creds.info("alice", "rig", "wlcg")
    assert info.audience == WLCG_AUDIENCE and info.scopes == ["storage.read:/"]
    at = portal.creds.access_token("alice", "rig", "wlcg").access_token
    assert at.count(".") == 2  # a JWT for the resource server


def test_the_link_page_login_and_return_commit_with_their_audit_rows(portal: Portal) -> None:
    """Each commit is an fsync: a new browser's session, the link bound to it and the audit
    row are one transaction; the login's pending row and its audit row one; the return's are
    two (the state used up before the code is redeemed, then the credential, the link's need
    and the audit row together)."""
    commits = [0]

    def count(_conn: object) -> None:
        commits[0] += 1

    event.listen(portal.creds.store.engine, "commit", count)
    try:
        url = portal.link()
        b = portal.browser()
        before = commits[0]
        assert b.open(url).status_code == 200 and commits[0] - before == 1
        action, fields = login_form(b.open(url))
        before = commits[0]
        start = b.client.post(action, data=fields, follow_redirects=False)
        assert start.status_code == 303 and commits[0] - before == 1
        back_url = b.to_provider_and_back(start)
        before = commits[0]
        assert b.come_back(back_url).status_code == 303
        assert commits[0] - before == 2
    finally:
        event.remove(portal.creds.store.engine, "commit", count)
    assert [r["outcome"] for r in portal.audit("login")] == ["ok", "started"]
    assert portal.creds.info("alice", "rig").has_refresh_token
    assert heading(b.open(url)) == "All set"


def test_a_link_refused_to_a_new_browser_leaves_no_session(portal: Portal) -> None:
    url = portal.link()
    assert portal.browser().open(url).status_code == 200
    with portal.creds.store.engine.connect() as conn:
        sessions = conn.execute(text("SELECT count(*) FROM portal_sessions")).scalar_one()
    other = portal.browser()
    refused = other.open(url)
    assert refused.status_code == 410 and "another browser" in refused.text
    assert COOKIE not in refused.headers.get("set-cookie", "")
    with portal.creds.store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM portal_sessions")).scalar_one() == sessions
