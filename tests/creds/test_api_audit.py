"""The credd's audit rows for refusals and errors: a denied fetch or delete, a refused store,
a fetch that failed inside the server -- each recorded with its outcome, never a secret, and
no row claims success for it."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from htsec.config import Settings
from htsec.server import create_app
from htsec.tokens.authority import Authority
from tests.creds.conftest import AT, bearer


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
    assert ("bob", "store", "conflict") in seen, seen
    assert ("bob", "fetch", "error") in seen
    assert ("bob", "fetch", "ok") not in seen
    assert AT not in repr(rows)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "route"])
def test_a_control_character_in_a_query_never_costs_other_audit_rows(
    db_url: str, monkeypatch: pytest.MonkeyPatch, fast: bool
) -> None:
    """``user=alice%00`` or ``handle=%00``: PostgreSQL cannot store a NUL in text, and the
    fetches' audit rows are written in batches -- one such value must neither fail the request
    with a 500 nor lose the batched rows of everyone else's fetches."""
    from htsec.config import load
    from tests.creds.conftest import credd_app

    monkeypatch.setenv("HTSEC_DATABASE_URL", db_url)
    settings = load()
    authority = Authority(settings)
    authority.keyring.create("POOL")
    alice = bearer(authority.mint(identity="alice@pool.example.org"))
    app = credd_app(settings, authority, fast=fast)
    with TestClient(app, raise_server_exceptions=False) as client:  # type: ignore[arg-type]
        client.put("/v1/creds/box", headers=alice, json={"access_token": AT})
        assert client.get("/v1/creds/box/access-token", headers=alice).status_code == 200
        for query in ("user=alice%00", "handle=%00", "user=al%01ice", "handle=h%7f"):
            r = client.get(f"/v1/creds/box/access-token?{query}", headers=alice)
            assert r.status_code in (400, 403, 404), (query, r.status_code, r.text)
        cs = app.state.credstore  # type: ignore[attr-defined]
        cs.flush_audit()
        rows = cs.audit_log("alice")
    assert [r["outcome"] for r in rows if r["action"] == "fetch"].count("ok") == 1
    assert not any("\x00" in str(v) for r in rows for v in r.values())
