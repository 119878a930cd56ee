"""The credd route ``POST /v1/creds/check`` (htsec.creds.check): one request per submit, per
need present / missing / mismatch / needs-reauth, on the real app in process.

HTCondor references: ``credd.cpp`` ``check_creds_handler`` (local issuers created, their
refusals' texts, WRITE), ``store_cred.cpp`` ``cred_matches`` (the exact string compare htsec
replaces with a set compare).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from htsec.config import Settings
from htsec.creds.links import MAX_NEEDS
from htsec.creds.writes import CREDENTIALS
from htsec.server import create_app
from htsec.tokens.authority import Authority


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(settings: Settings, authority: Authority) -> Iterator[TestClient]:
    with TestClient(create_app(settings, authority)) as c:
        yield c


@pytest.fixture
def alice(authority: Authority, client: TestClient) -> dict[str, str]:
    """alice, who stored box (scopes b,a) and gdrive_work (audience https://g)."""
    h = bearer(authority.mint(identity="alice@pool.example.org"))
    for path, body in (
        ("/v1/creds/box", {"refresh_token": "rt", "scopes": ["b", "a"]}),
        ("/v1/creds/gdrive?handle=work", {"refresh_token": "rt", "audience": "https://g"}),
    ):
        assert client.put(path, headers=h, json=body).status_code == 200
    return h


def check(client: TestClient, headers: dict[str, str], *needs: dict[str, Any], **extra: Any) -> Any:
    return client.post("/v1/creds/check", headers=headers, json={"needs": list(needs), **extra})


def states(body: Any) -> list[str]:
    return [n["state"] for n in body["needs"]]


def test_check_present_with_scopes_compared_as_sets(
    client: TestClient, alice: dict[str, str]
) -> None:
    # Stored "b,a", asked "a,b": HTCondor's cred_matches compares the strings and calls it a
    # mismatch; they are the same scopes.
    r = check(
        client,
        alice,
        {"service": "box", "scopes": ["a", "b"]},
        {"service": "gdrive", "handle": "work", "audience": "https://g"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["ready"] is True and r.json()["user"] == "alice"
    assert states(r.json()) == ["present", "present"]


def test_check_missing_and_mismatch(client: TestClient, alice: dict[str, str]) -> None:
    r = check(
        client,
        alice,
        {"service": "box", "scopes": ["a"]},
        {"service": "gdrive", "handle": "work", "audience": "https://other"},
        {"service": "onedrive"},
    ).json()
    assert r["ready"] is False
    assert states(r) == ["mismatch", "mismatch", "missing"]
    box = r["needs"][0]
    assert box["stored_scopes"] == ["a", "b"] and "asks for scopes a" in box["detail"]
    assert r["needs"][1]["stored_audience"] == "https://g"


def test_check_needs_reauth(
    client: TestClient, alice: dict[str, str], authority: Authority
) -> None:
    with authority.store.session() as s:
        s.execute(
            update(CREDENTIALS)
            .where(CREDENTIALS.c.service == "box")
            .values(state="needs_reauth", last_error="invalid_grant")
        )
    r = check(client, alice, {"service": "box", "scopes": ["a", "b"]}).json()
    assert states(r) == ["needs-reauth"] and "invalid_grant" in r["needs"][0]["detail"]


def test_check_creates_missing_local_issuer_credential(
    client: TestClient, alice: dict[str, str]
) -> None:
    # credd.cpp: a missing local-issuer credential is written for the credmon, not a login.
    r = check(client, alice, {"service": "scitokens"}).json()
    assert r["ready"] is True and r["needs"][0]["detail"] == "created for the local issuer"
    listed = client.get("/v1/creds", headers=alice).json()["credentials"]
    assert "scitokens" in [c["name"] for c in listed]


def test_check_local_issuer_refusals_are_htcondor_texts(
    client: TestClient, alice: dict[str, str]
) -> None:
    r = check(client, alice, {"service": "scitokens", "handle": "h"})
    assert r.status_code == 400
    assert r.json()["detail"] == "Local Issuer credential 'scitokens' can't have a handle."
    r = check(client, alice, {"service": "scitokens", "scopes": ["x"]})
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "Local Issuer/Client credential 'scitokens' can't have user-provided scope or audience."
    )


def test_check_empty_needs_is_ready(client: TestClient, alice: dict[str, str]) -> None:
    assert check(client, alice).json() == {"user": "alice", "ready": True, "needs": []}


def test_check_other_user_needs_administrator(
    client: TestClient, alice: dict[str, str], authority: Authority
) -> None:
    bob = bearer(authority.mint(identity="bob@pool.example.org"))
    assert check(client, bob, {"service": "box"}, user="alice").status_code == 403
    admin = bearer(authority.mint(identity="admin@pool.example.org", authz=["ADMINISTRATOR"]))
    r = check(client, admin, {"service": "box", "scopes": ["a", "b"]}, user="alice")
    assert r.status_code == 200 and states(r.json()) == ["present"]
    # bob's own: nothing stored.
    assert states(check(client, bob, {"service": "box"}).json()) == ["missing"]


def test_check_needs_write(client: TestClient, authority: Authority) -> None:
    # CREDD_CHECK_CREDS is registered at WRITE (credd.cpp).
    read_only = bearer(authority.mint(identity="alice@pool.example.org", authz=["READ"]))
    r = check(client, read_only, {"service": "box"})
    assert r.status_code == 403 and "WRITE" in r.json()["detail"]


def test_check_bounded_needs_and_names(client: TestClient, alice: dict[str, str]) -> None:
    many = [{"service": f"s{i}"} for i in range(MAX_NEEDS + 1)]
    assert check(client, alice, *many).status_code in (400, 422)
    r = check(client, alice, {"service": "bad_name"})
    assert r.status_code == 400 and "service name" in r.json()["detail"]


def test_check_with_authorize_makes_the_link_in_the_same_request(
    client: TestClient, alice: dict[str, str], authority: Authority
) -> None:
    # condor_credd answers CREDD_CHECK_CREDS with the URL itself: one round trip per submit.
    r = check(
        client,
        alice,
        {"service": "box", "scopes": ["a", "b"]},
        {"service": "onedrive", "scopes": ["files"]},
        authorize=True,
    ).json()
    assert states(r) == ["present", "missing"]
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+/key/[0-9a-f]{64}", r["url"])
    assert r["expires_at"] > time.time()
    # Nothing to log in for, a mismatch, or another user's check: no link.
    assert (
        "url"
        not in check(client, alice, {"service": "box", "scopes": ["a", "b"]}, authorize=True).json()
    )
    assert (
        "url"
        not in check(
            client, alice, {"service": "box"}, {"service": "onedrive"}, authorize=True
        ).json()
    )
    admin = bearer(authority.mint(identity="admin@pool.example.org", authz=["ADMINISTRATOR"]))
    other = check(client, admin, {"service": "onedrive"}, user="alice", authorize=True)
    assert other.status_code == 200 and "url" not in other.json()


def test_check_a_credential_without_a_refresh_token_needs_reauth(
    client: TestClient, alice: dict[str, str]
) -> None:
    # The provider gave no refresh token at the login: the credmon cannot renew the access
    # token for a job that outlives it, so the user is sent to log in again (the link page,
    # which asks the same htsec.creds.check.need_states, shows it as not done either).
    h = alice
    body = {"access_token": "at", "expires_at": int(time.time()) + 3600, "scopes": ["a"]}
    assert client.put("/v1/creds/onedrive", headers=h, json=body).status_code == 200
    r = check(client, h, {"service": "onedrive", "scopes": ["a"]}).json()
    assert r["ready"] is False and states(r) == ["needs-reauth"]
    assert "without a refresh token" in r["needs"][0]["detail"]
