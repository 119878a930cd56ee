"""Fixtures shared by the credential tests: a client of a real ``htsec serve`` (``api``) and
tokens minted by the CLI, the credd app in process with and without its access-token fast
path (``both``), alice's stored credential ``box``, and an empty
credential directory (``creds``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from htsec.config import Settings
from htsec.creds.creddir import CredDir
from htsec.creds.fastpath import AccessTokenFastPath
from htsec.server import create_app
from htsec.tokens.authority import Authority
from tests.conftest import run

AT = "access-SECRET-token"


def credd_app(settings: Settings, authority: Authority, *, fast: bool) -> object:
    """The server's app; without the access-token fast path unless ``fast``, so requests reach
    the documented FastAPI route."""
    app = create_app(settings, authority)
    if not fast:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not AccessTokenFastPath]
        app.middleware_stack = None
    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def both(settings: Settings, authority: Authority) -> Iterator[dict[str, TestClient]]:
    """Clients of two apps on one store: ``fast`` (with the fast path) and ``route``."""
    with (
        TestClient(credd_app(settings, authority, fast=True)) as fast,
        TestClient(credd_app(settings, authority, fast=False)) as slow,
    ):
        yield {"fast": fast, "route": slow}


@pytest.fixture
def alice(authority: Authority, both: dict[str, TestClient]) -> dict[str, str]:
    """Headers of an unlimited token of alice, who has stored ``box`` (access token ``AT``)."""
    h = bearer(authority.mint(identity="alice@pool.example.org"))
    r = both["fast"].put("/v1/creds/box", headers=h, json={"access_token": AT, "expires_in": 600})
    assert r.status_code == 200, r.text
    return h


def mint(identity: str, *authz: str) -> str:
    """A token for ``identity`` from ``htsec token create`` (``--authz`` for each of ``authz``)."""
    args = ["token", "create", "-i", identity]
    for a in authz:
        args += ["--authz", a]
    r = run(*args)
    assert r.code == 0, r.err
    return r.out.strip()


@pytest.fixture
def api(server: dict[str, str], home: Path) -> Iterator[httpx.Client]:
    """An HTTPS client of the test's ``htsec serve``, trusting its CA."""
    url, ca = server["_CONDOR_HTSEC_SERVER_URL"], str(home / "tls" / "ca.pem")
    with httpx.Client(base_url=url, verify=ca) as client:
        yield client


@pytest.fixture
def creds(tmp_path: Path) -> CredDir:
    """An empty credential directory (``2770``) under the test's temporary directory."""
    c = CredDir(tmp_path / "oauth_credentials")
    c.ensure_root()
    return c
