"""The access-token fast path answers exactly as the documented FastAPI route does, and every
fetch is audited (batched, flushed on shutdown)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from htsec.config import Settings
from htsec.creds.fastpath import AccessTokenFastPath
from htsec.server import create_app
from htsec.tokens.authority import Authority

AT = "access-SECRET-token"


def _app(settings: Settings, authority: Authority, *, fast: bool) -> object:
    app = create_app(settings, authority)
    if not fast:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not AccessTokenFastPath]
        app.middleware_stack = None
    return app


@pytest.fixture
def clients(settings: Settings, authority: Authority) -> Iterator[tuple[TestClient, TestClient]]:
    with (
        TestClient(_app(settings, authority, fast=True)) as fast,
        TestClient(_app(settings, authority, fast=False)) as slow,
    ):
        yield fast, slow


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
