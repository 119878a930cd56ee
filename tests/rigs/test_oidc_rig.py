"""The OIDC rig (tests/oidc.py) behaves as the credmon tests rely on: a real provider with
PKCE, rotating refresh tokens with reuse detection, short TTLs, JWT access tokens, and faults."""

from __future__ import annotations

import json
import time

import httpx
import jwt
import pytest

from tests.oidc import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    WLCG_AUDIENCE,
    FlowError,
    Provider,
    authorize,
    client_credentials,
    default_config,
    inject_fault,
    introspect,
    obtain_refresh_token,
    provider_fixture,
    refresh,
    revoke_grants,
)

AT_TTL = 2
CLIENT = (CLIENT_ID, CLIENT_SECRET)

oidc = provider_fixture(
    default_config(ttl={"AccessToken": AT_TTL, "RefreshToken": 600, "ClientCredentials": 30})
)


def login(provider: Provider, user: str = "alice") -> dict[str, object]:
    return obtain_refresh_token(
        provider, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, user, ["openid", "profile"]
    )


def error_of(r: httpx.Response) -> str:
    assert r.status_code == 400, r.text
    return str(r.json()["error"])


def test_discovery(oidc: Provider) -> None:
    meta = oidc.metadata
    assert meta["issuer"] == oidc.issuer
    assert oidc.issuer.startswith("http://127.0.0.1:")
    assert oidc.token_url == f"{oidc.issuer}/token"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(
        meta["grant_types_supported"]
    )
    assert oidc.introspection_url and oidc.revocation_url
    keys = httpx.get(oidc.jwks_url).json()["keys"]
    assert {k["alg"] for k in keys} == {"RS256", "ES256"}
    assert all("d" not in k for k in keys)


def test_auth_code_with_pkce_gives_refresh_token(oidc: Provider) -> None:
    tokens = login(oidc)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == AT_TTL
    assert tokens["refresh_token"] and tokens["access_token"] and tokens["id_token"]
    assert set(str(tokens["scope"]).split()) == {"openid", "profile"}
    info = introspect(oidc, CLIENT, str(tokens["access_token"]))
    assert info["active"] is True and info["sub"] == "alice" and info["client_id"] == CLIENT_ID


def test_pkce_is_required(oidc: Provider) -> None:
    r = httpx.get(
        oidc.authorization_url,
        params={
            "client_id": CLIENT_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid",
            "state": "s",
        },
    )
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith(REDIRECT_URI) and "error=invalid_request" in location
    assert "PKCE" in location


def test_code_is_single_use_and_bound_to_verifier(oidc: Provider) -> None:
    code, verifier = authorize(oidc, CLIENT_ID, REDIRECT_URI, "alice", "openid")
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    wrong = httpx.post(oidc.token_url, data={**base, "code_verifier": "x" * 43}, auth=CLIENT)
    assert error_of(wrong) == "invalid_grant"
    # a failed PKCE check does not consume the code in oidc-provider; the right verifier works
    ok = httpx.post(oidc.token_url, data={**base, "code_verifier": verifier}, auth=CLIENT)
    assert ok.status_code == 200, ok.text
    again = httpx.post(oidc.token_url, data={**base, "code_verifier": verifier}, auth=CLIENT)
    assert error_of(again) == "invalid_grant"


def test_refresh_rotates_and_reuse_revokes_the_grant(oidc: Provider) -> None:
    first = login(oidc)
    r = refresh(oidc, CLIENT, str(first["refresh_token"]))
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert introspect(oidc, CLIENT, second["access_token"])["active"] is True

    reuse = refresh(oidc, CLIENT, str(first["refresh_token"]))
    assert error_of(reuse) == "invalid_grant"
    assert "grant.error invalid_grant: refresh token already used" in oidc.log()
    # the whole grant is gone: the newest refresh token and its access token too
    assert error_of(refresh(oidc, CLIENT, second["refresh_token"])) == "invalid_grant"
    assert introspect(oidc, CLIENT, second["access_token"])["active"] is False


def test_refresh_can_narrow_scope(oidc: Provider) -> None:
    tokens = login(oidc)
    r = refresh(oidc, CLIENT, str(tokens["refresh_token"]), scope="openid")
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "openid"
    wider = refresh(oidc, CLIENT, r.json()["refresh_token"], scope="openid email")
    assert error_of(wider) == "invalid_scope"


def test_access_token_expires_after_ttl(oidc: Provider) -> None:
    tokens = login(oidc)
    access = str(tokens["access_token"])
    info = introspect(oidc, CLIENT, access)
    assert info["active"] is True
    assert 0 < info["exp"] - time.time() <= AT_TTL
    time.sleep(max(0.0, info["exp"] - time.time()) + 0.2)
    assert introspect(oidc, CLIENT, access) == {"active": False}
    # the refresh token outlives it
    assert refresh(oidc, CLIENT, str(tokens["refresh_token"])).status_code == 200


def test_client_credentials(oidc: Provider) -> None:
    r = client_credentials(oidc, CLIENT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in"] == 30 and "refresh_token" not in body
    info = introspect(oidc, CLIENT, body["access_token"])
    assert info["active"] is True and info["client_id"] == CLIENT_ID and "sub" not in info
    bad = httpx.post(
        oidc.token_url, data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, "x")
    )
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_client"


@pytest.mark.parametrize("kind", [500, 503, "malformed", "drop"])
def test_fault_injection_hits_exactly_k_requests(oidc: Provider, kind: object) -> None:
    before = oidc.stats()["requests"].get("/token", 0)
    inject_fault(oidc, kind, 2, retry_after=7)  # type: ignore[arg-type]
    for _ in range(2):
        if kind == "drop":
            with pytest.raises(httpx.RemoteProtocolError):
                client_credentials(oidc, CLIENT)
            continue
        r = client_credentials(oidc, CLIENT)
        if kind == "malformed":
            assert r.status_code == 200
            with pytest.raises(json.JSONDecodeError):
                r.json()
        else:
            assert r.status_code == kind
            assert r.headers["retry-after"] == "7"
            assert r.json()["error"] == {500: "server_error", 503: "temporarily_unavailable"}[kind]
    assert client_credentials(oidc, CLIENT).status_code == 200
    stats = oidc.stats()
    assert stats["requests"]["/token"] == before + 3
    assert stats["pending_faults"] == []


def test_slow_fault_delays_then_answers(oidc: Provider) -> None:
    inject_fault(oidc, "slow", 1, delay_ms=1200)
    started = time.monotonic()
    assert client_credentials(oidc, CLIENT).status_code == 200
    assert time.monotonic() - started >= 1.2
    started = time.monotonic()
    assert client_credentials(oidc, CLIENT).status_code == 200
    assert time.monotonic() - started < 1.0
    # a slow token endpoint trips a client timeout, as a hung IdP would
    inject_fault(oidc, "slow", 1, delay_ms=1500)
    with pytest.raises(httpx.ReadTimeout):
        refresh(oidc, CLIENT, "whatever", timeout=0.5)


def test_faults_only_hit_their_path(oidc: Provider) -> None:
    inject_fault(oidc, 502, 1, path="/jwks")
    assert client_credentials(oidc, CLIENT).status_code == 200
    assert httpx.get(oidc.jwks_url).status_code == 502
    assert httpx.get(oidc.jwks_url).status_code == 200
    with pytest.raises(httpx.HTTPStatusError):
        inject_fault(oidc, "nonsense", 1)


def test_jwt_access_token_with_resource_indicator(oidc: Provider) -> None:
    scopes = ["openid", "storage.read:/", "compute.create", "storage.read:/elsewhere"]
    tokens = obtain_refresh_token(
        oidc, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, "alice", scopes, resource=WLCG_AUDIENCE
    )
    signing = jwt.PyJWKClient(oidc.jwks_url)

    def verify(token: str) -> dict[str, object]:
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "ES256" and header["typ"] == "at+jwt"
        key = signing.get_signing_key_from_jwt(token)
        return jwt.decode(
            token, key, algorithms=["ES256"], audience=WLCG_AUDIENCE, issuer=oidc.issuer
        )

    claims = verify(str(tokens["access_token"]))
    # scopes the resource server does not list are dropped silently
    assert set(str(claims["scope"]).split()) == {"storage.read:/", "compute.create"}
    assert claims["sub"] == "alice" and claims["client_id"] == CLIENT_ID
    assert claims["wlcg.ver"] == "1.0"
    assert int(claims["exp"]) - int(claims["iat"]) == AT_TTL  # type: ignore[call-overload]

    r = refresh(oidc, CLIENT, str(tokens["refresh_token"]), scope="storage.read:/")
    assert r.status_code == 200, r.text
    narrowed = verify(r.json()["access_token"])
    assert narrowed["scope"] == "storage.read:/" and narrowed["aud"] == WLCG_AUDIENCE

    unknown = refresh(oidc, CLIENT, r.json()["refresh_token"], resource="https://other.example")
    assert error_of(unknown) == "invalid_target"


def test_admin_revokes_a_users_grants(oidc: Provider) -> None:
    bob = login(oidc, "bob")
    carol = login(oidc, "carol")
    revoked = revoke_grants(oidc, "bob")
    assert len(revoked) == 1
    assert error_of(refresh(oidc, CLIENT, str(bob["refresh_token"]))) == "invalid_grant"
    assert introspect(oidc, CLIENT, str(bob["access_token"]))["active"] is False
    assert refresh(oidc, CLIENT, str(carol["refresh_token"])).status_code == 200
    assert revoke_grants(oidc, "bob") == []


def test_flow_errors_are_reported(oidc: Provider) -> None:
    with pytest.raises(FlowError, match="redirect_uri"):
        obtain_refresh_token(
            oidc, CLIENT_ID, CLIENT_SECRET, "https://evil.example/cb", "alice", ["openid"]
        )
