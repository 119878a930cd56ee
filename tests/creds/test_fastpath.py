"""The access-token fast path answers exactly as the documented FastAPI route does (service
names decoded once, blank and excessive query fields alike), and every fetch is audited
(batched, flushed on shutdown)."""

from __future__ import annotations

import asyncio

import pytest
from starlette.testclient import TestClient

from htsec.config import Settings
from htsec.server import create_app
from htsec.tokens.authority import Authority
from tests.creds.conftest import AT


@pytest.fixture
def clients(both: dict[str, TestClient]) -> tuple[TestClient, TestClient]:
    return both["fast"], both["route"]


def test_same_answers(clients: tuple[TestClient, TestClient], authority: Authority) -> None:
    fast, slow = clients
    alice = authority.mint(identity="alice@pool.example.org")
    bob = authority.mint(identity="bob@pool.example.org")
    ep = authority.mint(identity="condor@ep.pool.example.org", authz=["DAEMON"])
    h = {"Authorization": f"Bearer {alice}"}
    assert (
        fast.put(
            "/v1/creds/box", headers=h, json={"access_token": AT, "expires_in": 600}
        ).status_code
        == 200
    )
    cases = [
        ({"Authorization": f"Bearer {alice}"}, {}),
        ({"Authorization": f"Bearer {ep}"}, {"user": "alice"}),
        ({"Authorization": f"Bearer {bob}"}, {"user": "alice"}),  # 403
        ({"Authorization": f"Bearer {bob}"}, {}),  # 404
        ({"Authorization": "Bearer a.b.c"}, {}),  # 401
        ({}, {}),  # 401
        ({"Authorization": f"Bearer {alice}"}, {"handle": "../x"}),  # 400
        ({"Authorization": f"Bearer {alice}"}, {"user": "x" * 300}),  # 400
    ]
    for headers, params in cases:
        a = fast.get("/v1/creds/box/access-token", headers=headers, params=params)
        b = slow.get("/v1/creds/box/access-token", headers=headers, params=params)
        assert a.status_code == b.status_code, (params, a.text, b.text)
        assert a.headers["content-type"] == b.headers["content-type"]
        ja, jb = a.json(), b.json()
        if a.status_code == 200:
            assert ja["access_token"] == jb["access_token"] == AT
            assert abs(ja["expires_in"] - jb["expires_in"]) <= 1
        else:
            assert ja == jb
    assert [
        r.status_code
        for r in (
            fast.get("/v1/creds/box/access-token", headers=h),
            fast.get(
                "/v1/creds/box/access-token",
                headers={"Authorization": f"Bearer {bob}"},
                params={"user": "alice"},
            ),
        )
    ] == [200, 403]


def test_fetches_audited_and_flushed_on_shutdown(settings: Settings, authority: Authority) -> None:
    alice = authority.mint(identity="alice@pool.example.org")
    h = {"Authorization": f"Bearer {alice}"}
    app = create_app(settings, authority)
    with TestClient(app) as client:
        client.put("/v1/creds/box", headers=h, json={"access_token": AT})
        for _ in range(3):
            assert client.get("/v1/creds/box/access-token", headers=h).status_code == 200
        assert client.get("/v1/creds/nope/access-token", headers=h).status_code == 404
        assert len(app.state.credstore._pending) == 4  # batched, not yet written
    # Leaving the client ran the app's shutdown: the batch is in the database now.
    assert app.state.credstore._pending == []
    rows = [r for r in app.state.credstore.audit_log("alice") if r["action"] == "fetch"]
    assert sorted(r["outcome"] for r in rows) == ["not_found", "ok", "ok", "ok"]
    assert all(r["actor"] == "alice@pool.example.org" and r["peer"] for r in rows)
    assert AT not in repr(rows)


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
