"""``"use_refresh_token": false`` in a ``.meta`` is honoured as ``condor_credmon_oauth`` does.

HTCondor's web server writes it when the provider returned no refresh token, and
``OAuthCredmon.should_renew`` then never renews the token: the ``.use`` the login left is used
until it expires. ``htsec credmon`` neither refreshes such a token nor touches its files, and a
credential it had imported from the directory before is forgotten once a new login says so."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from htsec.config import load
from htsec.credmon.daemon import Credmon, PassResult
from htsec.creds.crypto import Sealer
from htsec.creds.store import CredStore
from htsec.store import open_store
from tests.conftest import run
from tests.credmon.webserver import login, make_root, provider_env, token_requests, write_files
from tests.oidc import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    default_config,
    obtain_refresh_token,
    provider_fixture,
)
from tests.oidc import Provider as OidcProvider

# 4 s access tokens: due for a refresh 2 s after they were issued.
oidc = provider_fixture(default_config(ttl={"AccessToken": 4, "RefreshToken": 3600, "Grant": 3600}))


@pytest.fixture
def root(tmp_path: Path, oidc: OidcProvider, monkeypatch: pytest.MonkeyPatch) -> Path:
    provider_env(monkeypatch, tmp_path, oidc)
    return make_root(tmp_path)


def pass_later(root: Path, seconds: float) -> PassResult:
    """One pass of ``htsec credmon --once``, in process with its clock ``seconds`` on (access
    tokens issued now are due then) instead of sleeping for them."""
    credmon = Credmon(load(), cred_dir=root)
    try:
        credmon.engine.clock = lambda: time.time() + seconds
        return asyncio.run(credmon.one_pass())
    finally:
        credmon.close()


def snapshot(d: Path) -> dict[str, tuple[bytes, int, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in d.iterdir()}


def test_a_token_marked_use_refresh_token_false_is_never_refreshed(
    root: Path, oidc: OidcProvider, home: Path
) -> None:
    token = obtain_refresh_token(oidc, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, "alice", "openid")
    write_files(root, "alice", token, oidc.token_url, use_refresh_token=False)
    files = snapshot(root / "alice")
    before = token_requests(oidc)

    result = pass_later(root, 2.5)  # its access token is due by then

    assert result.ok, result
    assert result.report.refreshed == [] and result.imported == [], result
    assert token_requests(oidc) == before
    assert snapshot(root / "alice") == files


def test_a_new_login_without_refresh_token_ends_the_refreshing(
    root: Path, oidc: OidcProvider, home: Path
) -> None:
    login(root, oidc, "alice")
    assert run("credmon", "--cred-dir", str(root), "--once").code == 0
    # The user logs in again and the provider returns no refresh token this time: the web
    # server writes .top {"refresh_token": ""}, .meta use_refresh_token false, the new .use.
    token = obtain_refresh_token(oidc, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, "alice", "openid")
    del token["refresh_token"]
    write_files(root, "alice", token, oidc.token_url)
    files = snapshot(root / "alice")
    before = token_requests(oidc)

    result = pass_later(root, 2.5)  # the access token the credmon holds is due by then

    assert result.ok, result
    assert token_requests(oidc) == before  # the old refresh token was not redeemed
    assert snapshot(root / "alice") == files  # the new login's files stand
    s = load()
    creds = CredStore(open_store(s.database_url), Sealer(s.store_key_file))
    assert creds.credentials("alice") == []
    assert [a["actor"] for a in creds.audit_log("alice") if a["action"] == "delete"] == ["credmon"]
    creds.store.close()
