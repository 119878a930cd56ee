"""What the credd API answers to input it does not take: a chunked body over the bound (413),
unknown routes and methods (problem documents), scopes that are not RFC 6749 scope tokens."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from htsec.config import load
from htsec.tokens.authority import Authority
from htsec.web.bounds import MAX_BODY
from tests.creds.conftest import AT, bearer, credd_app


def test_chunked_body_over_the_bound_is_413(
    both: dict[str, TestClient], alice: dict[str, str]
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"access_token": "'
        for _ in range(MAX_BODY // 1000 + 2):
            yield b"a" * 1000
        yield b'"}'

    r = both["route"].put(
        "/v1/creds/box", headers={**alice, "Content-Type": "application/json"}, content=chunks()
    )
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"


def test_routing_errors_are_problem_documents(both: dict[str, TestClient]) -> None:
    r = both["route"].get("/v1/nope")
    assert (r.status_code, r.headers["content-type"]) == (404, "application/problem+json")
    assert r.json()["title"] == "Not Found"
    r = both["route"].post("/v1/creds")
    assert (r.status_code, r.headers["content-type"]) == (405, "application/problem+json")
    assert "GET" in r.headers["allow"]


def test_scopes_are_rfc6749_scope_tokens(
    both: dict[str, TestClient], alice: dict[str, str]
) -> None:
    for bad in (["a b"], ['ü"x'], ["c,d"]):
        r = both["route"].put(
            "/v1/creds/drive", headers=alice, json={"access_token": AT, "scopes": bad}
        )
        assert r.status_code == 400, (bad, r.text)
        assert "scope" in r.json()["detail"]
    r = both["route"].put(
        "/v1/creds/drive", headers=alice, json={"access_token": AT, "scopes": ["b", "a", "a"]}
    )
    assert r.status_code == 200 and r.json()["scopes"] == ["a", "b"], r.text


def test_token_type_is_an_rfc6749_type_name(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored token_type is text: "Bearer\\x00" was a 500 on PostgreSQL (it cannot store a
    NUL); anything but a type-name or URI (visible ASCII) is a 400 on either database."""
    monkeypatch.setenv("HTSEC_DATABASE_URL", db_url)
    settings = load()
    authority = Authority(settings)
    authority.keyring.create("POOL")
    alice = bearer(authority.mint(identity="alice@pool.example.org"))
    app = credd_app(settings, authority, fast=False)
    with TestClient(app, raise_server_exceptions=False) as client:  # type: ignore[arg-type]
        for bad in ("Bearer\x00", "a b", "\x1b[31m", ""):
            r = client.put(
                "/v1/creds/box", headers=alice, json={"access_token": AT, "token_type": bad}
            )
            assert r.status_code == 400, (bad, r.status_code, r.text)
            assert "type-name" in r.json()["detail"]
        for good in ("DPoP", "urn:ietf:params:oauth:token-type:jwt"):
            r = client.put(
                "/v1/creds/box", headers=alice, json={"access_token": AT, "token_type": good}
            )
            assert r.status_code == 200 and r.json()["token_type"] == good, r.text
