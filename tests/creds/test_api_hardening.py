"""The credd API under hostile or unusual requests, on both the fast path and the documented
FastAPI route (found by an independent review; each test fails on the code before it):
authorization of one's own fetches, double-decoded service names, blank and excessive query
fields, audit rows for refusals, 413 for chunked bodies, problem documents for routing errors,
scopes held to RFC 6749."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from htsec.config import Settings
from htsec.server import create_app
from htsec.tokens.authority import Authority
from htsec.web.bounds import MAX_BODY
from tests.creds.test_fastpath import AT, _app


@pytest.fixture
def both(settings: Settings, authority: Authority) -> Iterator[dict[str, TestClient]]:
    with (
        TestClient(_app(settings, authority, fast=True)) as fast,
        TestClient(_app(settings, authority, fast=False)) as slow,
    ):
        yield {"fast": fast, "route": slow}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def alice(authority: Authority, both: dict[str, TestClient]) -> dict[str, str]:
    h = bearer(authority.mint(identity="alice@pool.example.org"))
    r = both["fast"].put("/v1/creds/box", headers=h, json={"access_token": AT, "expires_in": 600})
    assert r.status_code == 200, r.text
    return h


@pytest.mark.parametrize("path", ["fast", "route"])
def test_own_fetch_needs_read(
    both: dict[str, TestClient], authority: Authority, alice: dict[str, str], path: str
) -> None:
    """A token whose scope grants no READ (ALLOW only; OWNER, no level since HTCondor 9.0)
    cannot read the secret. READ can, and so can every level that implies READ (WRITE,
    ADVERTISE_STARTD: htsec.authz, HTCondor's permission hierarchy), and an unlimited token."""
    client = both[path]
    cases = (
        (["ALLOW"], 403),
        (["OWNER"], 403),
        (["READ"], 200),
        (["WRITE"], 200),
        (["ADVERTISE_STARTD"], 200),
    )
    for authz, expected in cases:
        h = bearer(authority.mint(identity="alice@pool.example.org", authz=authz))
        r = client.get("/v1/creds/box/access-token", headers=h)
        assert r.status_code == expected, (authz, r.text)
        assert (AT in r.text) == (expected == 200)
    assert client.get("/v1/creds/box/access-token", headers=alice).json()["access_token"] == AT


@pytest.mark.parametrize("path", ["fast", "route"])
def test_service_names_are_decoded_once(
    both: dict[str, TestClient], alice: dict[str, str], path: str
) -> None:
    """``/v1/creds/b%256Fx/...`` names the service ``b%6Fx`` (refused), never ``box``. The
    test client decodes paths itself, so the ASGI app is called with the server's scope."""
    app = both[path].app
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/creds/b%6Fx/access-token",  # what uvicorn puts there: decoded once
        "raw_path": b"/v1/creds/b%256Fx/access-token",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", alice["Authorization"].encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type,operator]
    assert sent[0]["status"] == 400, sent
    assert AT.encode() not in b"".join(m.get("body", b"") for m in sent)  # type: ignore[misc]


def test_query_strings_answer_the_same_on_both_paths(
    both: dict[str, TestClient], alice: dict[str, str]
) -> None:
    for query in ("?user=", "?a&a&a&a&a&a&a&a&a&a&a", "?handle=&user=alice", "?x=" + "y" * 2000):
        a = both["fast"].get("/v1/creds/box/access-token" + query, headers=alice)
        b = both["route"].get("/v1/creds/box/access-token" + query, headers=alice)
        assert a.status_code < 500, (query, a.text)
        if len(query) < 1000:
            assert a.status_code == b.status_code, (query, a.text, b.text)
        assert a.headers["content-type"].startswith("application/")


def test_refusals_and_errors_are_audited(
    settings: Settings, authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings, authority)
    alice = bearer(authority.mint(identity="alice@pool.example.org"))
    bob = bearer(authority.mint(identity="bob@pool.example.org"))
    with TestClient(app) as client:
        client.put("/v1/creds/box", headers=bob, json={"access_token": AT})
        assert client.get("/v1/creds/box/access-token?user=bob", headers=alice).status_code == 403
        assert client.delete("/v1/creds/box?user=bob", headers=alice).status_code == 403
        assert (
            client.put(
                "/v1/creds/box", headers=bob, json={"access_token": AT}, params={}
            ).status_code
            == 200
        )
        stale = client.put(
            "/v1/creds/box", headers={**bob, "If-Match": "1"}, json={"access_token": AT}
        )
        assert stale.status_code == 409
        cs = app.state.credstore

        def broken(*a: object, **k: object) -> object:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(cs, "access_token", broken)
        with pytest.raises(RuntimeError):
            client.get("/v1/creds/box/access-token", headers=bob)
    rows = app.state.credstore.audit_log("bob")
    seen = {(r["actor"].split("@")[0], r["action"], r["outcome"]) for r in rows}
    assert ("alice", "fetch", "denied") in seen
    assert ("alice", "delete", "denied") in seen
    assert any(a == "bob" and act == "store" and o not in ("ok",) for a, act, o in seen), seen
    assert ("bob", "fetch", "error") in seen
    assert ("bob", "fetch", "ok") not in seen
    assert AT not in repr(rows)


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
