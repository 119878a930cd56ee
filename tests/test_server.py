"""The HTTP application (htsec.server): API documentation off unless asked for, and no API
response that may carry a secret is cacheable."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from htsec.config import Settings, load
from htsec.server import create_app
from htsec.tokens.authority import Authority
from tests.creds.conftest import AT, credd_app


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_api_docs_off_by_default(settings: Settings, authority: Authority, path: str) -> None:
    with TestClient(create_app(settings, authority)) as client:
        r = client.get(path)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_api_docs_on_with_knob(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, authority: Authority
) -> None:
    monkeypatch.setenv("_CONDOR_HTSEC_SERVE_API_DOCS", "true")
    with TestClient(create_app(load(), authority)) as client:
        schema = client.get("/openapi.json")
        assert schema.status_code == 200
        assert "/v1/creds/{service}/access-token" in schema.json()["paths"]
        assert client.get("/docs").status_code == 200
        assert client.get("/redoc").status_code == 200


def test_token_request_answers_are_no_store(settings: Settings, authority: Authority) -> None:
    """The request's one-time secret and the collected token must not be cached (RFC 9111)."""
    with TestClient(create_app(settings, authority)) as client:
        submitted = client.post(
            "/v1/token-requests", json={"identity": "carol@pool.example.org", "authz": ["READ"]}
        )
        assert submitted.status_code == 201
        assert submitted.headers["cache-control"] == "no-store"
        body = submitted.json()
        rid, secret = body["request"]["id"], body["secret"]
        admin = authority.mint(identity="admin@pool.example.org", authz=["ADMINISTRATOR"])
        approved = client.post(
            f"/v1/token-requests/{rid}/approve", headers={"Authorization": f"Bearer {admin}"}
        )
        assert approved.status_code == 200, approved.text
        collected = client.get(
            f"/v1/token-requests/{rid}", headers={"X-Htsec-Request-Secret": secret}
        )
        assert collected.status_code == 200 and collected.json()["token"]
        assert collected.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("fast", [True, False])
def test_access_token_answers_are_no_store(
    settings: Settings, authority: Authority, fast: bool
) -> None:
    """The access-token fetch is no-store on the fast path and on the documented route."""
    alice = {"Authorization": f"Bearer {authority.mint(identity='alice@pool.example.org')}"}
    with TestClient(credd_app(settings, authority, fast=fast)) as client:  # type: ignore[arg-type]
        put = client.put("/v1/creds/box", headers=alice, json={"access_token": AT})
        assert put.status_code == 200, put.text
        r = client.get("/v1/creds/box/access-token", headers=alice)
        assert r.status_code == 200 and r.json()["access_token"] == AT
        assert r.headers["cache-control"] == "no-store"
