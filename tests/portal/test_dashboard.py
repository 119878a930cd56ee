"""The dashboard (htsec.portal.dashboard): signing in with an ID token, a user's credentials
with re-authorise and delete, the administrator's tokens, token requests and health; CSRF and
authorization on every form. The whole app in process (TestClient over https, so the
``__Host-`` cookies travel), on a real store."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from htsec.config import Settings
from htsec.server import create_app
from htsec.tokens.authority import Authority

ALICE = "alice@pool.example.org"
ADMIN = "admin@pool.example.org"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def browser(settings: Settings, authority: Authority) -> TestClient:
    return TestClient(
        create_app(settings, authority), base_url="https://testserver", follow_redirects=False
    )


@pytest.fixture
def app_clients(settings: Settings, authority: Authority) -> Iterator[list[TestClient]]:
    clients: list[TestClient] = []
    yield clients
    for c in clients:
        c.close()


def csrf_of(page: str) -> str:
    match = CSRF.search(page)
    assert match, page
    return match.group(1)


def sign_in(client: TestClient, token: str) -> str:
    """Sign in as the token's subject; returns the dashboard page."""
    page = client.get("/")
    assert page.status_code == 200 and "Sign in" in page.text
    r = client.post("/dashboard/login", data={"token": token, "csrf_token": csrf_of(page.text)})
    assert r.status_code == 303, r.text
    assert r.headers["location"].endswith("/?done=login")
    dash = client.get("/?done=login")
    assert dash.status_code == 200 and "Signed in." in dash.text
    return dash.text


@pytest.fixture
def alice(settings: Settings, authority: Authority) -> Iterator[tuple[TestClient, str]]:
    token = authority.mint(identity=ALICE, authz=("READ", "WRITE"))
    with browser(settings, authority) as client:
        r = client.put(
            "/v1/creds/box",
            params={"handle": "work"},
            headers={"Authorization": f"Bearer {token}"},
            json={"refresh_token": "rt-SECRET", "scopes": ["files.read"], "provider": "box"},
        )
        assert r.status_code == 200, r.text
        yield client, token


def test_sign_in_shows_own_credentials(alice: tuple[TestClient, str]) -> None:
    client, token = alice
    page = sign_in(client, token)
    assert "Your credentials" in page and "files.read" in page and "<code>work</code>" in page
    assert "rt-SECRET" not in page
    # Not an administrator: none of their sections.
    assert "Issued ID tokens" not in page and "Pending token requests" not in page


def test_a_bad_token_signs_no_one_in(alice: tuple[TestClient, str]) -> None:
    client, token = alice
    page = client.get("/")
    r = client.post(
        "/dashboard/login", data={"token": token[:-3] + "AAA", "csrf_token": csrf_of(page.text)}
    )
    assert r.status_code == 401 and "Nothing was stored" in r.text
    assert "Sign in to your credentials" in client.get("/").text


def test_forms_without_csrf_are_refused_and_change_nothing(
    alice: tuple[TestClient, str], authority: Authority
) -> None:
    client, token = alice
    # Sign-in itself needs the session's token: a login CSRF cannot plant someone's session.
    client.get("/")
    r = client.post("/dashboard/login", data={"token": token})
    assert r.status_code == 403
    sign_in(client, token)
    r = client.post("/dashboard/credentials/delete", data={"service": "box", "handle": "work"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = client.post(
        "/dashboard/credentials/delete",
        data={"service": "box", "handle": "work", "csrf_token": "x" * 43},
    )
    assert r.status_code == 403
    assert "files.read" in client.get("/").text


def test_delete_and_reauthorise(alice: tuple[TestClient, str]) -> None:
    client, token = alice
    page = sign_in(client, token)
    r = client.post(
        "/dashboard/credentials/reauthorize",
        data={"service": "box", "handle": "work", "csrf_token": csrf_of(page)},
    )
    assert r.status_code == 303 and re.search(r"/key/[0-9a-f]{64}$", r.headers["location"])
    r = client.post(
        "/dashboard/credentials/delete",
        data={"service": "box", "handle": "work", "csrf_token": csrf_of(page)},
    )
    assert r.status_code == 303 and r.headers["location"].endswith("?done=deleted")
    page = client.get(r.headers["location"]).text
    assert "The credential was deleted." in page and "No credentials are stored" in page
    r = client.post(
        "/dashboard/credentials/delete",
        data={"service": "box", "handle": "work", "csrf_token": csrf_of(page)},
    )
    assert r.status_code == 404


def test_a_read_only_token_cannot_delete(
    settings: Settings, authority: Authority, alice: tuple[TestClient, str]
) -> None:
    reader = authority.mint(identity=ALICE, authz=("READ",))
    with browser(settings, authority) as client:
        page = sign_in(client, reader)
        assert "files.read" in page
        r = client.post(
            "/dashboard/credentials/delete",
            data={"service": "box", "handle": "work", "csrf_token": csrf_of(page)},
        )
        assert r.status_code == 403 and "needs WRITE" in r.text


def test_user_cannot_use_administrator_forms(alice: tuple[TestClient, str]) -> None:
    client, token = alice
    page = sign_in(client, token)
    for path, data in (
        ("/dashboard/tokens/revoke", {"jti": "x"}),
        ("/dashboard/requests/decide", {"id": "x", "decision": "approve"}),
    ):
        r = client.post(path, data={**data, "csrf_token": csrf_of(page)})
        assert r.status_code == 403 and "ADMINISTRATOR" in r.text
    # Each refusal is in the audit trail, with who tried and what.
    rows = client.app.state.credstore.audit_log(limit=20)  # type: ignore[attr-defined]
    refused = {(r["action"], r["outcome"], r["actor"]) for r in rows if r["outcome"] == "denied"}
    assert refused >= {
        ("dashboard-revoke", "denied", ALICE),
        ("dashboard-approve", "denied", ALICE),
    }


def test_administrator_approves_denies_and_revokes(
    settings: Settings, authority: Authority, alice: tuple[TestClient, str]
) -> None:
    user_client, user_token = alice
    sign_in(user_client, user_token)
    admin = authority.mint(identity=ADMIN, authz=("ADMINISTRATOR",))
    with browser(settings, authority) as client:
        ids = []
        for who in ("carol", "dave"):
            r = client.post("/v1/token-requests", json={"identity": f"{who}@pool.example.org"})
            ids.append(r.json()["request"]["id"])
        page = sign_in(client, admin)
        assert "Pending token requests" in page and "carol@pool.example.org" in page
        assert "Credmon health" in page and "Issued ID tokens" in page
        csrf = csrf_of(page)
        r = client.post(
            "/dashboard/requests/decide",
            data={"id": ids[0], "decision": "approve", "csrf_token": csrf},
        )
        assert r.status_code == 303 and r.headers["location"].endswith("done=approved")
        r = client.post(
            "/dashboard/requests/decide",
            data={"id": ids[1], "decision": "deny", "csrf_token": csrf},
        )
        assert r.headers["location"].endswith("done=denied")
        states = {v.id: v.state for v in authority_requests(client)}
        assert states == {ids[0]: "approved", ids[1]: "denied"}

        jti = authority.verify(user_token).jti
        assert jti in client.get("/").text
        r = client.post("/dashboard/tokens/revoke", data={"jti": jti, "csrf_token": csrf})
        assert r.status_code == 303
        assert "Revoked" in client.get("/?done=revoked").text
    # The revoked token's dashboard session ends with it (within the verifier's second).
    import time

    time.sleep(1.1)
    assert "Sign in to your credentials" in user_client.get("/").text


def authority_requests(client: TestClient) -> list[object]:
    from htsec.tokens.requests import Requests

    reqs: Requests = client.app.state.requests  # type: ignore[attr-defined]
    return list(reqs.pending(include_done=True))


def test_the_token_cookie_opens_with_no_other_session(
    settings: Settings, authority: Authority, alice: tuple[TestClient, str]
) -> None:
    client, token = alice
    sign_in(client, token)
    from htsec.portal.dashboard import COOKIE

    stolen = client.cookies.get(COOKIE)
    assert stolen and token not in stolen
    from htsec.portal.sessions import COOKIE as SESSION

    with browser(settings, authority) as other:
        sign_in(other, authority.mint(identity="bob@pool.example.org"))  # bob's own session
        own = other.cookies.get(SESSION)
        assert own
        other.cookies.clear()
        page = other.get("/", headers={"Cookie": f"{SESSION}={own}; {COOKIE}={stolen}"})
        assert "Sign in to your credentials" in page.text
        # The same header with the session the cookie was sealed for: signed in.
        mine = client.cookies.get(SESSION)
        page = other.get("/", headers={"Cookie": f"{SESSION}={mine}; {COOKIE}={stolen}"})
        assert "Your credentials" in page.text


def test_sign_out_ends_the_session(alice: tuple[TestClient, str]) -> None:
    client, token = alice
    page = sign_in(client, token)
    r = client.post("/dashboard/logout", data={"csrf_token": csrf_of(page)})
    assert r.status_code == 303
    assert "Sign in to your credentials" in client.get("/").text


def test_pages_carry_the_portal_security_headers(alice: tuple[TestClient, str]) -> None:
    client, token = alice
    sign_in(client, token)
    r = client.get("/")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    # The one stylesheet is the same for everyone: a browser keeps it between pages.
    css = client.get("/static/portal.css")
    assert css.headers["cache-control"] == "public, max-age=3600" and css.headers["etag"]


def test_under_a_path_prefix(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, authority: Authority
) -> None:
    """With the portal at CREDMON_WEB_PREFIX-style https://host/oauth, every link, form and
    redirect of the dashboard stays under /oauth."""
    from htsec.config import load

    monkeypatch.setenv("HTSEC_PORTAL_URL", "https://testserver/oauth")
    token = authority.mint(identity=ALICE)
    with browser(load(), authority) as client:
        assert client.get("/").status_code == 404
        page = client.get("/oauth/").text
        assert (
            'action="/oauth/dashboard/login"' in page and 'href="/oauth/static/portal.css"' in page
        )
        r = client.post(
            "/oauth/dashboard/login", data={"token": token, "csrf_token": csrf_of(page)}
        )
        assert r.headers["location"] == "/oauth/?done=login"
        page = client.get("/oauth/?done=login").text
        assert 'action="/oauth/dashboard/logout"' in page
        r = client.post("/oauth/dashboard/logout", data={"csrf_token": csrf_of(page)})
        assert r.headers["location"] == "/oauth/"
