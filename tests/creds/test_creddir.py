"""CredDir: HTCondor's OAuth credential directory on disk (htsec.creds.creddir; FORMATS.md 3)."""

from __future__ import annotations

import json
import os
import re
import stat
import time
from pathlib import Path
from typing import Any

import classad2
import pytest

from htsec import _fs
from htsec.creds.creddir import CredDir
from htsec.creds.files import (
    MAX_CRED_FILE,
    MetaFile,
    TopFile,
    UseFile,
)
from htsec.creds.names import TokenName
from htsec.creds.pending import PendingLogin
from htsec.errors import (
    CredentialError,
    CredentialFileError,
    FileSecurityError,
)
from tests.creds.example_dir import EXPECTED, KEY, build_example, hidden, snapshot


def test_fixed_example_directory_byte_for_byte(tmp_path: Path, strict_umask: None) -> None:
    root = tmp_path / "oauth_credentials"
    build_example(root)
    # store_cred.cpp: "oauth cred dir should be chmod 2770, chown root:condor"
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o2770
    assert snapshot(root) == EXPECTED


def test_fixed_example_reads_back(tmp_path: Path) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    assert c.users() == ["alice", "bob"]
    assert c.names("alice") == [TokenName("box"), TokenName("box", "read"), TokenName("scitokens")]
    top = c.read_top("alice", TokenName("box", "read"))
    assert top is not None
    assert top.refresh_token == "rt\n2\u00e9" and top.scopes == ("read:/public",)
    assert dict(top.extra) == {"issued_by": "htsec"}
    use = c.read_use("alice", TokenName("box"))
    assert use is not None and use.access_token == "at-box-1"
    assert (use.token_type, use.expires_in, use.expires_at) == ("bearer", 3600.0, 1767229200.5)
    assert use.scope == "read:/public write:/home/alice"
    meta = c.read_meta("alice", TokenName("box", "read"))
    assert meta == MetaFile("cid-box", None, "https://api.box.com/oauth2/token")
    local = c.read_top("alice", TokenName("scitokens"))
    assert local == TopFile.local("alice")
    bare = c.read_use("bob", TokenName("mytoken"))
    assert bare == UseFile.bare_token("abc.def.ghi")
    assert c.read_top("bob", TokenName("mytoken")) is None
    pending = c.read_pending(KEY)
    assert pending is not None and [p.name.wire for p in pending] == ["box*read", "gdrive"]
    assert pending[0].client_secret == "cs-box"
    assert c.read_pid() == 4242 and c.is_complete()
    assert c.pending_keys() == [KEY]


def test_json_files_read_by_pythons_json_like_the_credmon(tmp_path: Path) -> None:
    """OAuthCredmon reads .top/.use/.meta with json.load; the curl plugin reads .use by line."""
    c = build_example(tmp_path / "oauth_credentials")
    user_dir = c.user_dir("alice")
    for name in ("box.top", "box.use", "box.meta", "box_read.top", "box_read.use"):
        data = (user_dir / name).read_bytes()
        assert isinstance(json.loads(data), dict)
        assert b"\n" not in data  # one line for multifile_curl_plugin.cpp GetToken
    assert json.loads((user_dir / "box_read.use").read_bytes())["access_token"] == "line1\nline2"
    # The web server parses the pending login with classad.parseAds and indexes these.
    ads = list(classad2.parseAds((c.root / KEY).read_text()))
    assert [(a["Provider"], a.get("Handle", ""), a["LocalUser"]) for a in ads] == [
        ("box", "read", "carol"),
        ("gdrive", "", "carol"),
    ]
    # OAuthCredmon.cleanup_key_files matches key files with this pattern.
    assert re.match(r"^[a-f0-9]{64}$", KEY)


# -- the directory: modes, owners, root, user dirs -------------------------------------------


def test_check_root_refuses_others(tmp_path: Path) -> None:
    root = tmp_path / "oauth"
    c = CredDir(root)
    with pytest.raises(FileSecurityError, match="mkdir -m 2770"):
        c.check_root()
    root.mkdir()
    for mode in (0o2771, 0o755, 0o704, 0o702):
        os.chmod(root, mode)
        with pytest.raises(FileSecurityError, match="chmod 2770") as info:
            c.check_root()
        assert f"{mode:04o}" in str(info.value)
    os.chmod(root, 0o2770)
    c.check_root()
    os.chmod(root, 0o700)
    c.check_root()  # HTCondor only insists that "other" has nothing
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileSecurityError, match="not a directory"):
        CredDir(tmp_path / "file").check_root()
    with pytest.raises(CredentialError, match="not a directory"):
        CredDir(tmp_path / "missing" / "oauth").ensure_root()


def test_user_dir_checks(creds: CredDir, tmp_path: Path) -> None:
    d = creds.user_dir("alice")
    d.mkdir(mode=0o775)
    os.chmod(d, 0o775)  # group-writable (tests/creds/test_creddir_user_dir.py has the rest)
    with pytest.raises(FileSecurityError, match="chmod go-w"):
        creds.write_use("alice", TokenName("box"), {"access_token": "t"})
    os.chmod(d, 0o2700)  # mkdir(0700) under a setgid root: fine
    creds.write_use("alice", TokenName("box"), {"access_token": "t"})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (creds.root / "mallory").symlink_to(elsewhere)
    with pytest.raises(FileSecurityError, match="not a directory"):
        creds.write_use("mallory", TokenName("box"), {"access_token": "t"})
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_uid_gid_own_everything_created(tmp_path: Path) -> None:
    c = CredDir(tmp_path / "oauth", uid=4321, gid=8765)
    c.ensure_root()
    c.store("alice", TokenName("box"), top=TopFile("rt"), use={"access_token": "a"})
    c.touch_mark("alice")
    c.write_pending([PendingLogin("box", "alice")], key=KEY)
    c.write_pid(7)
    c.touch_complete()
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in [c.root, *c.root.rglob("*")]}
    assert owners == {(4321, 8765)}


def test_chown_is_requested_before_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = os.fchown

    def spy(fd: int, uid: int, gid: int) -> None:
        calls.append((uid, gid))
        real(fd, os.geteuid(), os.getegid())

    monkeypatch.setattr(os, "fchown", spy)
    c = CredDir(tmp_path / "oauth", gid=os.getegid())
    c.ensure_root()
    c.write_use("alice", TokenName("box"), {"access_token": "a"})
    assert calls == [(-1, os.getegid())] * 3  # root dir, user dir, file


# -- atomicity -------------------------------------------------------------------------------


def test_no_temporary_files_left(tmp_path: Path) -> None:
    c = build_example(tmp_path / "oauth_credentials")
    c.rotate_refresh_token("alice", TokenName("box"), "rt-box-2")
    assert hidden(c.root) == []


def test_failed_replace_keeps_old_file(creds: CredDir, monkeypatch: pytest.MonkeyPatch) -> None:
    name = TokenName("box")
    creds.write_use("alice", name, {"access_token": "old"})
    before = snapshot(creds.root)

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        creds.write_use("alice", name, {"access_token": "new"})
    with pytest.raises(OSError, match="No space"):
        creds.write_pending([PendingLogin("box", "alice")], key=KEY)
    monkeypatch.undo()
    assert snapshot(creds.root) == before
    use = creds.read_use("alice", name)
    assert use is not None and use.access_token == "old"


def test_refresh_token_in_use_writes_nothing(creds: CredDir) -> None:
    with pytest.raises(CredentialError, match="refresh_token"):
        creds.store(
            "alice",
            TokenName("box"),
            top=TopFile("rt"),
            use={"access_token": "a", "refresh_token": "rt"},
        )
    assert list(creds.root.iterdir()) == []


def test_store_writes_use_last(creds: CredDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """The credd polls for <tok>.use to appear: it must come after .meta and .top."""
    order: list[str] = []
    real = _fs.write_atomic

    def spy(path: Path, data: bytes, mode: int = 0o600, **kw: Any) -> None:
        order.append(Path(path).suffix)
        real(path, data, mode, **kw)

    monkeypatch.setattr(_fs, "write_atomic", spy)
    creds.store(
        "alice", TokenName("box"), use={"access_token": "a"}, top=TopFile("r"), meta=MetaFile()
    )
    assert order == [".meta", ".top", ".use"]


def test_write_top_keeps_unknown_keys(creds: CredDir) -> None:
    name = TokenName("vault", "x")
    path = creds.path("alice", name, "top")
    creds.ensure_user_dir("alice")
    _fs.write_atomic(path, b'{"refresh_token": "r1", "vault_url": "https://v", "n": 1}', 0o400)
    creds.write_top("alice", name, TopFile("r2", ("a",), extra={"n": 2}))
    assert json.loads(path.read_bytes()) == {
        "refresh_token": "r2",
        "scopes": "a",
        "vault_url": "https://v",
        "n": 2,
    }
    new = creds.rotate_refresh_token("alice", name, "r3")
    assert (new.refresh_token, new.scopes, dict(new.extra)) == (
        "r3",
        ("a",),
        {"vault_url": "https://v", "n": 2},
    )
    creds.write_top("alice", name, TopFile("r4"), keep_unknown=False)
    assert json.loads(path.read_bytes()) == {"refresh_token": "r4"}
    _fs.write_atomic(path, b"{corrupt", 0o400)
    creds.write_top("alice", name, TopFile("r5"))  # a corrupt old file is just replaced
    assert json.loads(path.read_bytes()) == {"refresh_token": "r5"}
    creds.write_top("alice", TokenName("scitokens"), TopFile.local("alice"))
    with pytest.raises(CredentialError, match="no refresh token"):
        creds.rotate_refresh_token("alice", TokenName("scitokens"), "x")
    with pytest.raises(CredentialError, match="no refresh token"):
        creds.rotate_refresh_token("alice", TokenName("none"), "x")


def test_delete(creds: CredDir) -> None:
    name = TokenName("box")
    creds.store("alice", name, top=TopFile("r"), use={"access_token": "a"}, meta=MetaFile())
    assert creds.delete("alice", name)
    assert not creds.delete("alice", name)
    assert list(creds.user_dir("alice").iterdir()) == []


# -- reading files safely --------------------------------------------------------------------


def test_readers_refuse_links_fifos_and_large_files(creds: CredDir, tmp_path: Path) -> None:
    d = creds.ensure_user_dir("alice")
    outside = tmp_path / "outside.json"
    outside.write_bytes(b'{"refresh_token": "stolen"}')
    (d / "box.top").symlink_to(outside)
    with pytest.raises(CredentialFileError, match="symbolic link"):
        creds.read_top("alice", TokenName("box"))
    os.mkfifo(d / "box.use")
    with pytest.raises(CredentialFileError, match="not a regular file"):
        creds.read_use("alice", TokenName("box"))
    (d / "box.meta").write_bytes(b" " * (MAX_CRED_FILE + 1))
    with pytest.raises(CredentialFileError, match="larger than"):
        creds.read_meta("alice", TokenName("box"))
    assert creds.read_top("alice", TokenName("other")) is None
    assert creds.read_top("nobody", TokenName("box")) is None


# -- mark and sweep --------------------------------------------------------------------------


def test_mark_and_sweep(creds: CredDir) -> None:
    assert not creds.touch_mark("alice")  # no user directory: nothing to sweep
    assert not creds.mark_path("alice").exists()
    creds.write_use("alice@example.org", TokenName("box"), {"access_token": "a"})
    assert creds.touch_mark("alice@example.org")
    mark = creds.mark_path("alice")
    assert mark.name == "alice.mark" and stat.S_IMODE(mark.stat().st_mode) == 0o600
    os.utime(mark, (1000, 1000))
    assert not creds.touch_mark("alice")  # keep if exists: the mtime stays
    assert creds.mark_time("alice") == 1000
    # process_cred_mark_dir: swept once now - mtime >= SEC_CREDENTIAL_SWEEP_DELAY
    assert creds.sweepable(now=1000 + 3599) == []
    assert creds.sweepable(now=1000 + 3600) == ["alice"]
    assert creds.sweepable(now=1010, delay=10) == ["alice"]
    # "marky.mark" may be a user's directory, never a mark
    creds.write_use("marky.mark", TokenName("box"), {"access_token": "a"})
    assert creds.mark_time("marky") is None
    assert creds.sweepable(now=time.time() + 10**6) == ["alice"]
    assert creds.clear_mark("alice") and not creds.clear_mark("alice")
    assert creds.mark_time("alice") is None


# -- pid and CREDMON_COMPLETE ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "pid"), [(b"123", 123), (b"  77\n", 77), (b"+5", 5), (b"42abc", 42)]
)
def test_read_pid_like_credmon_kick(creds: CredDir, data: bytes, pid: int) -> None:
    (creds.root / "pid").write_bytes(data)
    assert creds.read_pid() == pid


@pytest.mark.parametrize("data", [b"", b"abc", b"0", b"-3", b"1" * 256])
def test_read_pid_errors(creds: CredDir, data: bytes) -> None:
    (creds.root / "pid").write_bytes(data)
    with pytest.raises(CredentialFileError):
        creds.read_pid()


def test_pid_and_complete(creds: CredDir) -> None:
    assert creds.read_pid() is None
    creds.write_pid()
    assert creds.read_pid() == os.getpid()
    with pytest.raises(TypeError):
        creds.write_pid(0)
    assert not creds.clear_complete() and not creds.is_complete()
    creds.touch_complete()
    done = creds.root / "CREDMON_COMPLETE"
    os.utime(done, (1, 1))
    creds.touch_complete()  # a second pass bumps the mtime
    assert done.stat().st_mtime > 1 and creds.is_complete()
    assert creds.clear_complete() and not creds.is_complete()
