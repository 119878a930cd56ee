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
