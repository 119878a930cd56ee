"""Signing in to the dashboard with OpenID Connect (htsec.portal.signin): the real
oidc-provider as ``HTSEC_PORTAL_LOGIN_PROVIDER``, the app in process at https://testserver;
the provider's login pages driven over HTTP (tests/portal/rig.py)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from htsec.config import Settings
from htsec.errors import Forbidden
from htsec.portal.signin import user_of
from htsec.server import create_app
from htsec.tokens.authority import Authority
from tests.oidc import Provider, inject_fault, provider_fixture
from tests.portal.rig import PORTAL, path_of, provider_login, rig_config

RETURN = f"{PORTAL}/dashboard/return"
oidc = provider_fixture(rig_config(RETURN))
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def make_client(
    portal_env: Callable[..., Settings],
) -> Iterator[Callable[..., TestClient]]:
    made: list[tuple[TestClient, Authority]] = []

    def make(**knobs: str) -> TestClient:
        settings = portal_env(HTSEC_PORTAL_LOGIN_PROVIDER="rig", **knobs)
        authority = Authority(settings)
        client = TestClient(
            create_app(settings, authority), base_url=PORTAL, follow_redirects=False
        )
        made.append((client, authority))
        return client

    yield make
    for client, authority in made:
        client.close()
        authority.store.close()


def start(client: TestClient) -> str:
    """Press "Sign in with rig"; the provider's authorization URL."""
    page = client.get("/")
    assert "Sign in with rig" in page.text
    assert "127.0.0.1" in page.headers["content-security-policy"]  # form-action: the provider
    r = client.post("/dashboard/oidc", data={"csrf_token": CSRF.findall(page.text)[-1]})
    assert r.status_code == 303, r.text
    return str(r.headers["location"])


def test_sign_in_at_the_provider_shows_own_credentials(
    oidc: Provider, make_client: Callable[..., TestClient]
) -> None:
    client = make_client()
    location = start(client)
    query = parse_qs(urlsplit(location).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    back = provider_login(location, oidc.issuer, user="alice")
    assert back.startswith(RETURN)
    r = client.get(path_of(back))
    assert r.status_code == 303 and r.headers["location"].endswith("/?done=login")
    page = client.get("/?done=login").text
    assert "Signed in as <strong>alice@pool.example.org</strong>" in page
    assert "Your credentials" in page and "Issued ID tokens" not in page
    # The pending sign-in is used up: the same return again is refused.
    assert client.get(path_of(back)).status_code == 403


def test_a_return_with_another_state_signs_no_one_in(
    oidc: Provider, make_client: Callable[..., TestClient]
) -> None:
    client = make_client()
    back = provider_login(start(client), oidc.issuer)
    forged = re.sub(r"state=[^&]+", "state=forged", back)
    r = client.get(path_of(forged))
    assert r.status_code == 403 and "state" in r.text
    assert "Sign in to your credentials" in client.get("/").text


def test_a_return_in_another_browser_signs_no_one_in(
    oidc: Provider, make_client: Callable[..., TestClient]
) -> None:
    client = make_client()
    back = provider_login(start(client), oidc.issuer)
    other = make_client()
    other.get("/")
    r = other.get(path_of(back))  # a code injected into another session
    assert r.status_code == 403 and "not started in this browser" in r.text


def test_a_claim_the_id_token_lacks_signs_no_one_in(
    oidc: Provider, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(HTSEC_PORTAL_LOGIN_CLAIM="email")  # not in an 'openid'-only ID token
    back = provider_login(start(client), oidc.issuer)
    r = client.get(path_of(back))
    assert r.status_code == 403 and "has no email claim" in r.text


@pytest.mark.parametrize("verified", [None, False, "true"], ids=["absent", "false", "string"])
def test_an_email_the_provider_has_not_verified_signs_no_one_in(
    make_client: Callable[..., TestClient], verified: object
) -> None:
    # With HTSEC_PORTAL_LOGIN_CLAIM = email, an account whose owner typed alice's address at
    # the provider (unverified) would sign in as alice (OpenID Connect Core 5.1, 5.7).
    client = make_client(HTSEC_PORTAL_LOGIN_CLAIM="email")
    request = Request({"type": "http", "app": client.app, "headers": []})
    claims: dict[str, object] = {"email": "alice@pool.example.org"}
    if verified is not None:
        claims["email_verified"] = verified
    with pytest.raises(Forbidden, match="not verified"):
        user_of(request, claims)
    assert user_of(request, {**claims, "email_verified": True}) == "alice"


def test_a_user_of_another_domain_is_refused(
    oidc: Provider, make_client: Callable[..., TestClient]
) -> None:
    client = make_client()
    back = provider_login(start(client), oidc.issuer, user="mallory@elsewhere.org")
    r = client.get(path_of(back))
    assert r.status_code == 403 and "not a user of this pool" in r.text


def test_provider_refusals_are_pages(
    oidc: Provider, make_client: Callable[..., TestClient]
) -> None:
    client = make_client()
    back = provider_login(start(client), oidc.issuer)
    inject_fault(oidc, 400, body={"error": "invalid_grant"})
    r = client.get(path_of(back))
    assert r.status_code == 403 and "refused the sign-in" in r.text
    location = start(client)
    state = parse_qs(urlsplit(location).query)["state"][0]
    r = client.get(f"/dashboard/return?error=access_denied&state={state}")
    assert r.status_code == 403 and "access_denied" in r.text


def test_the_sign_in_page_uses_the_providers_read_at_start(
    oidc: Provider, make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    # The sign-in provider is the portal's own (read once); each sign-in page used to read
    # every provider's knobs and client secret file again.
    client = make_client()
    start(client)
    (tmp_path / "rig.secret").unlink()
    location = start(client)
    assert location.startswith(oidc.issuer)
