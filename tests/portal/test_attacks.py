"""Bad input and attacks on the portal's flow (htsec.portal.routes, .oauth, .csrf, .pages),
against the real oidc-provider: each gets a clear page, nothing is stored, an audit row is
written."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text

from htsec.config import Settings
from htsec.portal import oauth
from htsec.portal.pages import safe_next
from htsec.portal.sessions import COOKIE
from htsec.server import create_app
from htsec.tokens.authority import Authority
from tests.oidc import Provider, clear_faults, inject_fault
from tests.portal.conftest import Portal
from tests.portal.rig import PORTAL, heading, login_form, path_of, provider_login


def _nothing_stored(portal: Portal) -> None:
    assert portal.creds.credentials() == []


def _last(portal: Portal, action: str) -> dict[str, object]:
    rows = portal.audit(action)
    assert rows, f"no {action} audit row"
    return rows[0]


def _pending_logins(portal: Portal) -> int:
    with portal.creds.store.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM portal_logins")).scalar_one())


def test_return_without_state(portal: Portal) -> None:
    b = portal.browser()
    b.open(portal.link())
    r = b.come_back(f"{PORTAL}/return/rig?code=abc")
    assert r.status_code == 400 and "without a state" in r.text
    assert heading(r) == "The request could not be completed"
    _nothing_stored(portal)
    assert _last(portal, "login")["outcome"] == "failed"


def test_replayed_state(portal: Portal) -> None:
    b = portal.browser()
    url = portal.link()
    back_url = b.to_provider_and_back(b.start(url))
    assert b.come_back(back_url).status_code == 303
    portal.creds.delete("alice", "rig")
    again = b.come_back(back_url)
    assert again.status_code == 400 and "already completed" in again.text
    _nothing_stored(portal)
    assert "already completed" in str(_last(portal, "login")["detail"])


def test_code_injected_into_another_session(portal: Portal) -> None:
    """The attacker logs in at the provider with their own account and hands the victim the
    return URL (code + the attacker's state): the victim's browser is not the one that started
    that login, so nothing is stored for the victim."""
    victim_link, attacker_link = portal.link("alice"), portal.link("mallory")
    victim = portal.browser()
    victim.open(victim_link)
    attacker = portal.browser()
    back_url = attacker.to_provider_and_back(attacker.start(attacker_link), user="mallory")
    r = victim.come_back(back_url)
    assert r.status_code == 400 and "another browser session" in r.text
    _nothing_stored(portal)
    assert _last(portal, "login")["outcome"] == "failed"
    # and the state was not used up by the refusal: its own browser still finishes
    assert attacker.come_back(back_url).status_code == 303


def test_return_to_another_providers_address(portal: Portal) -> None:
    b = portal.browser()
    back_url = b.to_provider_and_back(b.start(portal.link()))
    r = b.come_back(back_url.replace("/return/rig", "/return/other"))
    assert r.status_code == 400 and "another provider" in r.text
    _nothing_stored(portal)


def test_unregistered_redirect_uri_is_refused_by_the_provider(
    portal_env: Callable[..., Settings], oidc: Provider
) -> None:
    """The redirect URI is sent exactly as configured: one the provider does not know makes
    the provider refuse before any login (nothing can come back)."""
    settings = portal_env(_CONDOR_RIG_RETURN_URL_SUFFIX="/return/rig/../evil")
    authority = Authority(settings)
    try:
        p = Portal(create_app(settings, authority), settings, oidc.issuer, oidc)
        start = p.browser().start(p.link())
        q = parse_qs(urlsplit(start.headers["location"]).query)
        assert q["redirect_uri"] == [f"{PORTAL}/return/rig/../evil"]
        with pytest.raises(AssertionError, match="redirect_uri"):
            provider_login(start.headers["location"], p.issuer)
        _nothing_stored(p)
    finally:
        authority.store.close()


def test_a_used_link_is_refused_in_any_other_browser(portal: Portal) -> None:
    url = portal.link()
    assert portal.browser().authorise(url).status_code == 303
    r = portal.browser().open(url)
    assert r.status_code == 410 and "already used" in r.text
    assert _last(portal, "link")["outcome"] == "reused"


def test_an_expired_link(portal: Portal) -> None:
    url = portal.link(ttl=1)
    time.sleep(1.1)
    r = portal.browser().open(url)
    assert r.status_code == 410 and "expired" in r.text
    assert _last(portal, "link")["outcome"] == "expired"


def test_a_link_opened_by_another_logged_in_user(portal: Portal) -> None:
    bob = portal.app.state.portal_sessions.create(user="bob")
    b = portal.browser()
    b.client.cookies.set(COOKIE, bob.id)  # type: ignore[attr-defined]
    r = b.open(portal.link("alice"))
    assert r.status_code == 403 and "this link is for alice" in r.text
    assert _last(portal, "link")["outcome"] == "denied"
    _nothing_stored(portal)


@pytest.mark.parametrize(
    ("token", "headers", "why"),
    [
        (None, {}, "missing or wrong CSRF token"),
        ("x" * 43, {}, "missing or wrong CSRF token"),
        ("RIGHT", {"Origin": "https://evil.example"}, "another origin"),
    ],
    ids=["missing", "wrong", "cross-origin"],
)
def test_csrf_on_the_login_form(
    portal: Portal, token: str | None, headers: dict[str, str], why: str
) -> None:
    b = portal.browser()
    page = b.open(portal.link())
    action, fields = login_form(page)
    if token is None:
        del fields["csrf_token"]
    elif token != "RIGHT":
        fields["csrf_token"] = token
    r = b.client.post(action, data=fields, headers=headers, follow_redirects=False)
    assert r.status_code == 403 and why in r.text
    assert _pending_logins(portal) == 0
    row = _last(portal, "csrf")
    assert row["outcome"] == "denied" and why in str(row["detail"])


def test_login_form_without_a_session(portal: Portal) -> None:
    b = portal.browser()
    page = b.open(portal.link())
    action, fields = login_form(page)
    b.client.cookies.clear()  # type: ignore[attr-defined]
    r = b.client.post(action, data=fields, follow_redirects=False)
    assert r.status_code == 403 and "no portal session" in r.text
    assert _pending_logins(portal) == 0


@pytest.mark.parametrize(
    "value",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "/ok\r\nLocation: https://evil.example",
        " /x",
        "http:/evil.example",
        "",
        None,
    ],
)
def test_next_never_leaves_the_site(value: str | None) -> None:
    assert safe_next(value, "/") == "/"


def test_next_keeps_a_local_path() -> None:
    assert safe_next("/key/ab?x=1", "/") == "/key/ab?x=1"


def test_provider_access_denied(portal: Portal) -> None:
    b = portal.browser()
    start = b.start(portal.link())
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    r = b.come_back(f"{PORTAL}/return/rig?error=access_denied&state={state}")
    assert r.status_code == 400 and "you declined" in r.text
    _nothing_stored(portal)
    assert "declined" in str(_last(portal, "login")["detail"])


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"kind": 400, "body": {"error": "invalid_grant"}}, "refused the login: invalid_grant"),
        ({"kind": 500}, "failed (HTTP 500)"),
        ({"kind": "drop"}, "could not be reached"),
        ({"kind": "slow", "delay_ms": 1500}, "did not answer within"),
    ],
    ids=["invalid_grant", "500", "dropped", "timeout"],
)
def test_token_endpoint_failures(
    portal: Portal, fault: dict[str, object], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(oauth, "PROVIDER_TIMEOUT", 0.5)
    b = portal.browser()
    back_url = b.to_provider_and_back(b.start(portal.link()))
    kind = fault.pop("kind")
    inject_fault(portal.provider, kind, **fault)  # type: ignore[arg-type]
    try:
        r = b.come_back(back_url)
    finally:
        clear_faults(portal.provider)
    assert r.status_code == 400 and message in r.text, r.text
    assert "Traceback" not in r.text
    _nothing_stored(portal)
    assert message in str(_last(portal, "login")["detail"])


def test_bad_key_in_the_address(portal: Portal) -> None:
    b = portal.browser()
    for bad in ("ABCD", "../../etc/passwd", "0" * 65):
        r = b.client.get(f"/key/{bad}")
        assert r.status_code in (400, 404), r.text
        assert "Traceback" not in r.text
    r = b.client.get(path_of(f"{PORTAL}/key/{'0' * 64}"))
    assert r.status_code == 404 and heading(r) == "Not found"


def test_next_on_the_link_page_is_ignored_unless_a_portal_path(portal: Portal) -> None:
    b = portal.browser()
    url = portal.link()
    page = b.open(f"{url}?next=https://evil.example/")
    assert page.status_code == 200 and "was ignored" in page.text
    assert 'name="next"' not in page.text
    row = _last(portal, "redirect")
    assert row["outcome"] == "denied" and "evil.example" in str(row["detail"])


def test_next_leads_back_into_the_portal_after_the_login(portal: Portal) -> None:
    b = portal.browser()
    url = portal.link()
    page = b.open(f"{url}?next=/somewhere/else")
    action, fields = login_form(page)
    assert fields["next"] == "/somewhere/else"
    start = b.client.post(action, data=fields, follow_redirects=False)
    back = b.come_back(b.to_provider_and_back(start))
    assert back.status_code == 303 and back.headers["location"] == "/somewhere/else"


def test_next_posted_to_another_site_is_not_followed(portal: Portal) -> None:
    b = portal.browser()
    url = portal.link()
    action, fields = login_form(b.open(url))
    fields["next"] = "//evil.example/x"
    start = b.client.post(action, data=fields, follow_redirects=False)
    back = b.come_back(b.to_provider_and_back(start))
    assert back.status_code == 303 and back.headers["location"] == urlsplit(url).path
    assert _last(portal, "redirect")["outcome"] == "denied"


def test_a_get_of_the_login_route_starts_nothing(portal: Portal) -> None:
    url = portal.link()
    b = portal.browser()
    key = url.rsplit("/", 1)[1]
    r = b.client.get(f"/login/rig?key={key}")
    assert r.status_code == 200 and heading(r) == "Log in at rig"
    assert _pending_logins(portal) == 0
    action, fields = login_form(r)
    assert b.client.post(action, data=fields, follow_redirects=False).status_code == 303
    assert _pending_logins(portal) == 1
