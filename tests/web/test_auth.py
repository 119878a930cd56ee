"""The web layer's authentication and authorization (htsec.web.auth): one reading of the
Bearer header, and one refusal -- 403 ``Forbidden`` naming the missing level -- from every
router and the access-token fast path. Real app, real tokens, real store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from htsec.authz import Perm
from htsec.config import Settings
from htsec.errors import Forbidden, TokenRejected
from htsec.server import create_app
from htsec.tokens.authority import Authority
from htsec.web.auth import bearer_token, require


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("BEARER a.b.c", "a.b.c")],
)
def test_bearer_token_is_read_from_the_header(header: str, token: str) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic abc", "abc"])
def test_a_header_without_a_bearer_token_is_rejected(header: str | None) -> None:
    with pytest.raises(TokenRejected) as rejected:
        bearer_token(header)
    assert rejected.value.reason == "no_token"


def test_require_follows_implied_levels(authority: Authority) -> None:
    admin = authority.verify(authority.mint(identity="a@pool.example.org", authz=["ADMINISTRATOR"]))
    require(admin, Perm.READ)  # ADMINISTRATOR -> WRITE -> READ
    with pytest.raises(Forbidden, match=r"a@pool\.example\.org's token lacks DAEMON"):
        require(admin, Perm.DAEMON)
    with pytest.raises(Forbidden, match=r"may not fetch bob's tokens \(needs DAEMON"):
        require(admin, Perm.DAEMON, to="fetch bob's tokens")


@pytest.fixture
def client(settings: Settings, authority: Authority) -> Iterator[TestClient]:
    with TestClient(create_app(settings, authority)) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path", "needs"),
    [
        ("get", "/v1/token-requests", "ADMINISTRATOR"),
        ("get", "/v1/auto-approve-rules", "ADMINISTRATOR"),
        ("get", "/v1/creds?user=bob", "ADMINISTRATOR"),
        ("get", "/v1/creds?all_users=true", "ADMINISTRATOR"),
        ("delete", "/v1/creds/box?user=bob", "ADMINISTRATOR"),
        ("get", "/v1/creds/box/access-token?user=bob", "DAEMON"),  # the fast path
    ],
)
def test_every_router_refuses_a_missing_level_alike(
    client: TestClient, authority: Authority, method: str, path: str, needs: str
) -> None:
    alice = authority.mint(identity="alice@pool.example.org", authz=["READ", "WRITE"])
    r = getattr(client, method)(path, headers={"Authorization": f"Bearer {alice}"})
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["title"], body["code"]) == ("Forbidden", "forbidden")
    assert body["detail"].startswith("alice@pool.example.org") and needs in body["detail"]
