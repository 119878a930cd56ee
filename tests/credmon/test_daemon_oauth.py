"""``htsec credmon`` as a drop-in for condor_credmon_oauth with a real OAuth provider: it
imports what HTCondor's web server wrote (.top + .meta), refreshes, writes .use, mirrors the
rotated refresh token into .top, and never re-imports a stale .top."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import run
from tests.credmon.webserver import top_rt, web_server_writes, write
from tests.oidc import CLIENT_ID, CLIENT_SECRET, introspect
from tests.oidc import Provider as OidcProvider


def test_once_imports_refreshes_and_publishes(
    cred_dir: Path, oidc: OidcProvider, home: Path
) -> None:
    first = web_server_writes(cred_dir, oidc, "alice")
    r = run("credmon", "--cred-dir", str(cred_dir), "--once")
    assert r.code == 0, r.err
    use_path = cred_dir / "alice" / "oidc.use"
    use = json.loads(use_path.read_text())
    assert "refresh_token" not in use and use["expires_in"] > 0
    assert stat.S_IMODE(use_path.stat().st_mode) == 0o400
    assert introspect(oidc, (CLIENT_ID, CLIENT_SECRET), use["access_token"])["active"] is True
    rotated = top_rt(cred_dir, "alice")
    assert rotated != first  # the .top mirrors the store's newest refresh token
    # The secret never reaches the credmon's output.
    assert first not in r.out + r.err and rotated not in r.out + r.err


@pytest.mark.slow
def test_stale_top_is_never_reimported(cred_dir: Path, oidc: OidcProvider, home: Path) -> None:
    """A crash between the store's commit and the .top mirror leaves the rotated-away token in
    .top; re-importing it would burn the grant (reuse detection). Older than the store: ignored."""
    first = web_server_writes(cred_dir, oidc, "alice")
    assert run("credmon", "--cred-dir", str(cred_dir), "--once").code == 0
    top = cred_dir / "alice" / "oidc.top"
    os.chmod(top, 0o600)
    write(top, json.dumps({"refresh_token": first, "scopes": "openid", "audience": ""}), 0o400)
    os.utime(top, (1_600_000_000, 1_600_000_000))
    os.unlink(cred_dir / "alice" / "oidc.use")
    r = run("credmon", "--cred-dir", str(cred_dir), "--once")
    assert r.code == 0, r.err
    assert "need re-authorisation" in r.out and "0 need" in r.out


@pytest.mark.slow
def test_reauthorised_user_is_imported(cred_dir: Path, oidc: OidcProvider, home: Path) -> None:
    web_server_writes(cred_dir, oidc, "alice")
    assert run("credmon", "--cred-dir", str(cred_dir), "--once").code == 0
    os.chmod(cred_dir / "alice" / "oidc.top", 0o600)
    newer = web_server_writes(cred_dir, oidc, "alice")  # a new browser login, written now
    r = run("credmon", "--cred-dir", str(cred_dir), "--once")
    assert r.code == 0 and "1 imported" in r.out, r.out + r.err
    assert top_rt(cred_dir, "alice") not in (newer,)  # imported, then refreshed and rotated
