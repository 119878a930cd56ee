"""Which user directories :class:`htsec.creds.creddir.CredDir` publishes into.

HTCondor makes them ``0700`` (condor_credd, ``store_cred.cpp``) or ``2755`` (its OAuth web
server's ``os.makedirs`` under umask 022 in a ``2770`` root, as user ``condor``); both are
accepted. Refused, with the fix in the message: group- or other-writable, a symlink, an owner
who could not write the credential root anyway, a root that others can enter."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

from htsec.creds.creddir import CredDir
from htsec.creds.names import TokenName
from htsec.errors import CredentialFileError, FileSecurityError

USE = {"access_token": "at"}
BOX = TokenName("box")


@pytest.fixture
def creds(tmp_path: Path) -> CredDir:
    root = tmp_path / "oauth_credentials"
    root.mkdir()
    os.chmod(root, 0o2770)
    return CredDir(root)


def web_server_makedirs(creds: CredDir, user: str) -> Path:
    old = os.umask(0o022)
    try:
        os.makedirs(creds.root / user)
    finally:
        os.umask(old)
    return creds.root / user


def test_the_directories_htcondor_makes_are_accepted(creds: CredDir) -> None:
    d = web_server_makedirs(creds, "alice")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o2755
    creds.check_user_dir("alice")
    creds.write_use("alice", BOX, USE)
    assert creds.read_use("alice", BOX).access_token == "at"  # type: ignore[union-attr]
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o2755  # left as HTCondor made it
    (creds.root / "bob").mkdir(mode=0o700)  # condor_credd's mkdir(..., 0700)
    creds.check_user_dir("bob")
    creds.write_use("bob", BOX, USE)
    creds.check_user_dir("carol")  # missing: made 0700 on the first write
    creds.write_use("carol", BOX, USE)
    assert stat.S_IMODE(os.stat(creds.root / "carol").st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o775, 0o2775, 0o757, 0o777, 0o2730])
def test_a_directory_others_may_write_is_refused_with_the_fix(creds: CredDir, mode: int) -> None:
    d = web_server_makedirs(creds, "alice")
    os.chmod(d, mode)
    with pytest.raises(FileSecurityError) as info:
        creds.check_user_dir("alice")
    assert f"mode {mode:04o}" in str(info.value)
    assert str(info.value).endswith(f"fix: chmod go-w {d}")
    with pytest.raises(FileSecurityError, match="chmod go-w"):
        creds.write_use("alice", BOX, USE)
    assert os.listdir(d) == []


def test_a_symlink_is_refused_with_the_fix(creds: CredDir, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (creds.root / "mallory").symlink_to(elsewhere)
    with pytest.raises(FileSecurityError, match=r"not a directory .* fix: replace it"):
        creds.check_user_dir("mallory")
    with pytest.raises(FileSecurityError):
        creds.write_use("mallory", BOX, USE)
    assert os.listdir(elsewhere) == []


def test_a_root_others_may_enter_is_refused_with_the_fix(creds: CredDir) -> None:
    web_server_makedirs(creds, "alice")
    os.chmod(creds.root, 0o2775)
    with pytest.raises(FileSecurityError, match=r"others have access.*chmod 2770"):
        creds.check_user_dir("alice")


def _another_account() -> pwd.struct_passwd:
    for account in pwd.getpwall():
        if account.pw_uid not in (0, os.geteuid()) and account.pw_gid != 0:
            return account
    pytest.skip("no second account in the password database")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_an_owner_who_cannot_write_the_root_is_refused(creds: CredDir) -> None:
    account = _another_account()
    d = web_server_makedirs(creds, "alice")
    os.chown(d, account.pw_uid, -1)
    with pytest.raises(FileSecurityError) as info:
        creds.check_user_dir("alice")
    assert f"belongs to uid {account.pw_uid}" in str(info.value)
    assert str(info.value).endswith(f"fix: chown {os.geteuid()} {d}")
    with pytest.raises(FileSecurityError, match="chown"):
        creds.write_use("alice", BOX, USE)
    # The web server's account: in the group of a group-writable root (root:condor 2770),
    # it could replace the whole directory anyway, so owning it is no extra power.
    os.chown(creds.root, -1, account.pw_gid)
    os.chmod(creds.root, 0o2770)
    creds.check_user_dir("alice")
    creds.write_use("alice", BOX, USE)
    os.chmod(creds.root, 0o2750)  # the group may not write the root: not theirs to own
    with pytest.raises(FileSecurityError, match="chown"):
        creds.check_user_dir("alice")
    assert CredDir(creds.root, uid=account.pw_uid).check_user_dir("alice") is None


def test_a_user_directory_swapped_for_a_symlink_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone who can write to the credential root swaps alice's directory for a symlink
    right after it was checked: the write, the read and the delete refuse to follow it, and
    nothing appears in (or disappears from) the link's target."""
    from htsec.creds.files import UseFile

    root = tmp_path / "creds"
    root.mkdir()
    os.chmod(root, 0o2770)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "box.top").write_text('{"refresh_token": "victim"}')
    cd = CredDir(root)
    checked = cd.ensure_user_dir

    def check_then_swap(user: str) -> Path:
        path = checked(user)
        os.rename(path, tmp_path / "moved-away")
        os.symlink(target, path)
        return path

    monkeypatch.setattr(cd, "ensure_user_dir", check_then_swap)
    with pytest.raises(FileSecurityError, match="symlink"):
        cd.write_use("alice", TokenName("box"), UseFile.from_response({"access_token": "at"}))
    assert sorted(p.name for p in target.iterdir()) == ["box.top"]
    with pytest.raises(CredentialFileError, match="symlink"):
        cd.read_top("alice", TokenName("box"))
    with pytest.raises(FileSecurityError):
        cd.delete("alice", TokenName("box"))
    assert (target / "box.top").read_text() == '{"refresh_token": "victim"}'
