"""``htsec credmon --once`` on a credential directory written by HTCondor's own OAuth web server
(user directories ``2755``, files by mkstemp + chmod 0400 + rename; see
:mod:`tests.credmon.webserver`), against the real provider with refresh-token rotation and
reuse detection on."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import run
from tests.credmon.webserver import (
    AUDIENCE,
    SCOPES,
    login,
    make_root,
    provider_env,
    read_json,
    token_requests,
)
from tests.oidc import CLIENT_ID, CLIENT_SECRET, default_config, introspect, provider_fixture
from tests.oidc import Provider as OidcProvider

oidc = provider_fixture(default_config())

USERS = [f"user{n:02d}" for n in range(20)]  # the manual trial of issue 9 used 200


@pytest.fixture
def root(tmp_path: Path, oidc: OidcProvider, monkeypatch: pytest.MonkeyPatch) -> Path:
    provider_env(monkeypatch, tmp_path, oidc)
    return make_root(tmp_path)


def test_once_publishes_into_every_web_server_user_directory(
    root: Path, oidc: OidcProvider, home: Path
) -> None:
    logins = {user: login(root, oidc, user) for user in USERS}
    metas = {}
    for user in USERS:
        assert stat.S_IMODE(os.stat(root / user).st_mode) == 0o2755  # what the web server made
        meta = root / user / "oidc.meta"
        metas[user] = (meta.read_bytes(), os.stat(meta).st_ino, os.stat(meta).st_mtime_ns)
    before = token_requests(oidc)

    r = run("credmon", "--cred-dir", str(root), "--once")

    assert r.code == 0, r.err
    assert "Traceback" not in r.err, r.err
    assert f"{len(USERS)} refreshed" in r.out and " 0 failed" in r.out, r.out
    assert token_requests(oidc) - before == len(USERS)  # one refresh each, no more
    client = (CLIENT_ID, CLIENT_SECRET)
    for user, first in logins.items():
        d = root / user
        assert sorted(os.listdir(d)) == ["oidc.meta", "oidc.top", "oidc.use"]  # no temp files
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o2755  # left as HTCondor made it
        use = read_json(d / "oidc.use")
        assert use["access_token"] != first["access_token"] and "refresh_token" not in use
        top = read_json(d / "oidc.top")
        assert list(top) == ["refresh_token", "scopes", "audience"]
        assert (top["scopes"], top["audience"]) == (SCOPES, AUDIENCE)
        assert top["refresh_token"] != first["refresh_token"]  # rotated ...
        for path in (d / "oidc.use", d / "oidc.top"):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o400
        meta = d / "oidc.meta"
        assert (meta.read_bytes(), os.stat(meta).st_ino, os.stat(meta).st_mtime_ns) == metas[user]
    for user in USERS[:3]:  # ... and what the files hold is what the provider now honours
        d = root / user
        assert introspect(oidc, client, read_json(d / "oidc.use")["access_token"])["active"]
        assert introspect(oidc, client, read_json(d / "oidc.top")["refresh_token"])["active"]
    assert sorted(os.listdir(root)) == sorted([*USERS, "CREDMON_COMPLETE", "pid"])
