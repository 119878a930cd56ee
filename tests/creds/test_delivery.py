"""Delivery of a token into a job's sandbox (htsec.creds.delivery), as the starter does."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from htsec.creds.delivery import deliver
from htsec.creds.files import (
    UseFile,
)
from htsec.creds.names import TokenName
from htsec.errors import (
    BadCredentialName,
    CredentialError,
    FileSecurityError,
)
from tests.creds.example_dir import hidden

# -- delivery to the job sandbox -------------------------------------------------------------


def test_deliver(tmp_path: Path, strict_umask: None) -> None:
    sandbox = tmp_path / "execute" / "dir_1234"
    sandbox.mkdir(parents=True)
    creds_dir = sandbox / ".condor_creds"
    path = deliver(creds_dir, "box*read", {"access_token": "a\nb", "expires_in": 60})
    assert path == creds_dir / "box_read.use"
    assert path.read_bytes() == b'{"access_token": "a\\nb", "expires_in": 60}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # cred_dir.cpp, as the job user
    assert stat.S_IMODE(creds_dir.stat().st_mode) == 0o700
    deliver(creds_dir, TokenName("box", "read"), UseFile({"access_token": "c"}))
    assert json.loads(path.read_bytes()) == {"access_token": "c"}
    assert hidden(sandbox) == [creds_dir]  # the directory itself is hidden; no temp files


def test_deliver_refuses_refresh_tokens_and_odd_places(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="access tokens only"):
        deliver(tmp_path / "c", "box", {"access_token": "a", "refresh_token": "r"})
    assert not (tmp_path / "c").exists()
    with pytest.raises(CredentialError, match="sandbox does not exist"):
        deliver(tmp_path / "no" / ".condor_creds", "box", {"access_token": "a"})
    with pytest.raises(BadCredentialName):
        deliver(tmp_path / "c", "../../etc/x", {"access_token": "a"})
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(FileSecurityError, match="not a directory"):
        deliver(tmp_path / "link", "box", {"access_token": "a"})
    assert list(target.iterdir()) == []
