"""``htsec credmon`` as a drop-in for condor_credmon_oauth, local-issuer mode: HTCondor's credd
writes a ``.top`` placeholder; within one pass a ``.use`` with a signed token appears."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import jwt
import pytest

from htsec.credmon.issuer import generate_key
from tests.conftest import run


@pytest.fixture
def cred_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = tmp_path / "issuer.pem"
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_PRIVATE_KEY", str(key))
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_ISSUER", "https://issuer.example.org")
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_TOKEN_AUDIENCE", "https://storage.example.org")
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_TOKEN_LIFETIME", "1200")
    generate_key(key, kid="local")
    root = tmp_path / "oauth_credentials"
    root.mkdir(mode=0o700)
    os.chmod(root, 0o2770)
    user = root / "alice"
    user.mkdir(mode=0o700)
    # What HTCondor's credd writes for a local-issuer service: the user name, not JSON.
    fd = os.open(user / "scitokens.top", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"alice")
    os.close(fd)
    return root


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
