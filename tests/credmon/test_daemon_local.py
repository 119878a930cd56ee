"""``htsec credmon`` as a drop-in for condor_credmon_oauth, local-issuer mode: HTCondor's credd
writes a ``.top`` placeholder; within one pass a ``.use`` with a signed token appears."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import jwt
import pytest

from htsec.creds.store import CredStore
from tests.conftest import run


@pytest.mark.slow
def test_once_issues_use_file(cred_root: Path, home: Path) -> None:
    r = run("credmon", "--cred-dir", str(cred_root), "--once")
    assert r.code == 0, r.err
    use = cred_root / "alice" / "scitokens.use"
    text = use.read_text()
    assert text.count("\n") <= 1  # a single line: HTCondor's curl plugin reads it line by line
    body = json.loads(text)
    assert body["expires_in"] > 1100
    assert stat.S_IMODE(use.stat().st_mode) == 0o400
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "alice" and claims["scope"] == "read:/user/alice write:/user/alice"
    assert (cred_root / "CREDMON_COMPLETE").exists()
    assert (cred_root / "pid").read_text().strip().isdigit()
    # A second pass: the token is not due, the file is left alone.
    before = use.stat().st_mtime_ns
    assert run("credmon", "--cred-dir", str(cred_root), "--once").code == 0
    assert use.stat().st_mtime_ns == before


def test_refuses_world_accessible_root(cred_root: Path) -> None:
    os.chmod(cred_root, 0o2775)
    r = run("credmon", "--cred-dir", str(cred_root), "--once")
    assert r.code == 2, r.err
    assert "chmod" in r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_debug_flag_like_the_anchor(cred_root: Path, home: Path) -> None:
    """condor_credmon_oauth takes --debug after its name; so does htsec credmon. The token it
    issues never appears in the debug log."""
    quiet = run("credmon", "--cred-dir", str(cred_root), "--once")
    assert quiet.code == 0 and " DEBUG " not in quiet.err, quiet.err
    os.chmod(cred_root / "alice" / "scitokens.use", 0o600)
    (cred_root / "alice" / "scitokens.use").unlink()
    loud = run("credmon", "--cred-dir", str(cred_root), "--once", "--debug")
    assert loud.code == 0 and " DEBUG " in loud.err, loud.err
    token = json.loads((cred_root / "alice" / "scitokens.use").read_text())["access_token"]
    assert token not in loud.err and token.split(".")[2] not in loud.err


def add_user(root: Path, user: str) -> None:
    d = root / user
    d.mkdir(mode=0o700)
    fd = os.open(d / "scitokens.top", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, user.encode())
    os.close(fd)


def test_one_bad_user_directory_does_not_stop_the_pass(cred_root: Path, home: Path) -> None:
    add_user(cred_root, "bob")
    assert run("credmon", "--cred-dir", str(cred_root), "--once").code == 0
    for user in ("alice", "bob"):
        use = cred_root / user / "scitokens.use"
        use.chmod(0o600)
        use.unlink()
    (cred_root / "CREDMON_COMPLETE").unlink()
    (cred_root / "alice").chmod(0o775)  # group-writable: unsafe
    r = run("credmon", "--cred-dir", str(cred_root), "--once")
    assert "Traceback" not in r.err, r.err
    assert (cred_root / "bob" / "scitokens.use").is_file(), r.err
    assert (cred_root / "CREDMON_COMPLETE").exists()
    assert "alice" in r.err and "0775" in r.err


def test_bare_tokens_stay_bare_when_republished(
    cred_root: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_TOKEN_USE_JSON", "false")
    use = cred_root / "alice" / "scitokens.use"
    assert run("credmon", "--cred-dir", str(cred_root), "--once").code == 0
    first = use.read_text()
    assert not first.startswith("{") and first.count(".") == 2
    use.chmod(0o600)
    use.unlink()
    assert run("credmon", "--cred-dir", str(cred_root), "--once").code == 0
    again = use.read_text()
    assert not again.startswith("{") and again.count(".") == 2, again[:40]


def test_issuer_knobs_are_read_when_the_credmon_starts(
    cred_root: Path, creds: CredStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local issuer's knobs are the ones in force when the credmon started: a configuration
    reloaded later (by anything else in the process) does not change a running credmon."""
    from htsec.config import load
    from htsec.credmon.daemon import Credmon

    credmon = Credmon(load(), cred_dir=cred_root, creds=creds)
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_TOKEN_LIFETIME", "60")
    load()
    issuer = credmon._issuer("scitokens")
    assert issuer is not None and issuer.config.lifetime == 1200
