"""The import scanner (htsec.creds.scan): an existing HTCondor credential directory read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from htsec.creds import scan
from htsec.creds.files import (
    MAX_CRED_FILE,
    TopFile,
)
from htsec.creds.scan import FoundCredential, ImportProblem, import_dir
from tests.creds.example_dir import build_example

# -- import ----------------------------------------------------------------------------------


def test_import_with_corrupt_files(tmp_path: Path) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    root = c.root
    alice = root / "alice"
    (alice / "gdrive.top").write_bytes(b'{"refresh_token": ')  # truncated
    (alice / "gdrive.use").write_bytes(b'{"access_token": "ok"}')
    (alice / "drop.meta").write_bytes(b'{"use_refresh_token": "no"}')
    (alice / "drop.top").write_bytes(b'{"refresh_token": "r"}')
    (alice / "big.use").write_bytes(b"x" * (MAX_CRED_FILE + 1))
    (alice / "link.top").symlink_to("/etc/passwd")
    os.mkfifo(alice / "pipe.use")
    (alice / "dir.use").mkdir()
    (alice / "box_.top").write_bytes(b"{}")  # the credmon skips a trailing "_"
    (alice / "b@d.top").write_bytes(b"{}")
    (alice / "box.top.tmp").write_bytes(b"half")  # credd's replace_secure_file temp
    (alice / ".box.use.0123456789ab.tmp").write_bytes(b"half")  # ours
    (alice / "tmpk2j3h4").write_bytes(b"half")  # credmon's mkstemp
    (root / "bad user").mkdir(mode=0o700)
    (root / "linked").symlink_to(alice)
    (root / "wsgi_session_key").write_bytes(b"k" * 24)

    items = list(import_dir(root))
    found = {(i.user, i.name.stem): i for i in items if isinstance(i, FoundCredential)}
    problems = {i.path.name: i.message for i in items if isinstance(i, ImportProblem)}

    # The good credentials are all there, complete.
    for key in [
        ("alice", "box"),
        ("alice", "box_read"),
        ("alice", "scitokens"),
        ("bob", "mytoken"),
    ]:
        assert found[key].ok, found[key].problems
    box = found[("alice", "box")]
    assert box.top is not None and box.top.refresh_token == "rt-box-1"
    assert box.meta is not None and box.meta.client_secret == "cs-box"
    assert box.use is not None and box.use.access_token == "at-box-1"
    assert found[("alice", "scitokens")].top == TopFile(placeholder="alice")
    assert found[("bob", "mytoken")].top is None

    # Broken files ride along with their credential; the good halves still come through.
    gdrive = found[("alice", "gdrive")]
    assert not gdrive.ok and gdrive.top is None and gdrive.use is not None
    assert "not valid JSON" in gdrive.problems[0].message
    drop = found[("alice", "drop")]
    assert drop.top is not None and drop.meta is None and "true or false" in str(drop.problems)
    assert "larger than" in found[("alice", "big")].problems[0].message
    assert "symbolic link" in found[("alice", "link")].problems[0].message
    assert "not a regular file" in found[("alice", "pipe")].problems[0].message
    assert "not a regular file" in found[("alice", "dir")].problems[0].message

    # What cannot be a credential is reported on its own.
    assert "empty handle" in problems["box_.top"]
    assert "service name" in problems["b@d.top"]
    assert "user name" in problems["bad user"]
    assert "symbolic link" in problems["linked"]
    assert set(problems) == {"box_.top", "b@d.top", "bad user", "linked"}
    assert set(found) == {
        ("alice", s)
        for s in ("box", "box_read", "scitokens", "gdrive", "drop", "big", "link", "pipe", "dir")
    } | {("bob", "mytoken")}


def test_import_reports_open_root_and_missing_root(tmp_path: Path) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    os.chmod(c.root, 0o755)
    items = list(import_dir(c.root))
    assert isinstance(items[0], ImportProblem) and "chmod 2770" in items[0].message
    assert sum(isinstance(i, FoundCredential) for i in items) == 4
    gone = list(import_dir(tmp_path / "nope"))
    assert len(gone) == 1 and isinstance(gone[0], ImportProblem)


def test_import_unreadable_user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    real = scan._fs.open_dir

    def flaky(path: Path) -> int:
        if path.name == "alice":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(scan._fs, "open_dir", flaky)
    items = list(import_dir(c.root))
    assert [i.path.name for i in items if isinstance(i, ImportProblem)] == ["alice"]
    assert [i.user for i in items if isinstance(i, FoundCredential)] == ["bob"]


def test_import_reads_relative_to_the_opened_user_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """alice's directory is swapped for a symlink after the scan, before the first read: what
    is imported is still the original directory's, not the link target's."""
    c = build_example(tmp_path / "oauth_credentials")
    alice = c.root / "alice"
    tops = [p.name for p in alice.iterdir() if p.name.endswith(".top")]
    assert tops
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in tops:
        (elsewhere / name).write_text('{"refresh_token": "planted"}')
    real = scan.read_limited
    swapped = []

    def swap_then_read(path: Path, limit: int, **kw: Any) -> bytes:
        if path.parent.name == "alice" and not swapped:
            os.rename(alice, tmp_path / "alice-moved")
            os.symlink(elsewhere, alice)
            swapped.append(path)
        return real(path, limit, **kw)

    monkeypatch.setattr(scan, "read_limited", swap_then_read)
    found = [i for i in import_dir(c.root) if isinstance(i, FoundCredential) and i.user == "alice"]
    assert swapped and found
    assert all(i.top is None or i.top.refresh_token != "planted" for i in found), found
