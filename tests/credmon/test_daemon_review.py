"""Defects an independent review of the credential directory and the credmon daemon found,
each with a test that fails on the code before the fix: one user's bad directory stopping
everyone's pass, hostile numbers in imported files, a .top vanishing mid-pass, signals
during the worker's start and the supervisor's back-off, keys of the wrong curve, and the
bare-token format lost when a .use was re-published."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from htsec import _fs
from htsec.config import load
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.importer import import_directory
from htsec.creds.layout import parse_top
from htsec.creds.store import CredStore
from htsec.errors import ConfigError, CredentialFileError
from htsec.store import open_store
from tests.conftest import HTSEC, run
from tests.credmon.test_daemon_local import cred_root

__all__ = ["cred_root"]  # the fixture, shared


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


def test_a_top_removed_during_the_pass_is_a_problem_not_a_crash(
    cred_root: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The credd deletes a .top between the directory scan and the import's stat."""
    import asyncio

    from htsec.credmon import daemon
    from htsec.credmon.daemon import Credmon
    from htsec.creds.layout import TopFile

    monkeypatch.setenv("_CONDOR_OIDC_CLIENT_ID", "c")
    monkeypatch.setenv("_CONDOR_OIDC_TOKEN_URL", "https://provider.example.org/token")
    credmon = Credmon(load(), cred_dir=cred_root)
    credmon.creds.put("alice", "oidc", refresh_token="old")
    (cred_root / "alice" / "oidc.top").write_bytes(b'{"refresh_token": "new"}')
    (cred_root / "alice" / "oidc.top").chmod(0o600)
    assert parse_top(b'{"refresh_token": "new"}') == TopFile(refresh_token="new")

    real_stat = os.stat

    def vanished(path: object, *a: object, **k: object) -> os.stat_result:
        if str(path).endswith("oidc.top"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_stat(path, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon.os, "stat", vanished)
    result = asyncio.run(credmon.one_pass())
    assert any("alice/oidc" in p for p in result.problems), result.problems
    assert (cred_root / "CREDMON_COMPLETE").exists()


def test_hostile_numbers_in_imported_files(tmp_path: Path) -> None:
    with pytest.raises(CredentialFileError, match="out of range"):
        parse_top(b'{"refresh_token": "r", "x": 1e400}')
    root = tmp_path / "creds"
    root.mkdir(mode=0o700)
    for user, use in (
        ("ann", b'{"access_token": "a", "expires_in": 1e400}'),
        ("ben", b'{"access_token": "b", "expires_at": 1e30}'),
        ("cid", b'{"access_token": "c", "expires_in": 600}'),
    ):
        (root / user).mkdir(mode=0o700)
        _fs.write_atomic(root / user / "box.use", use, 0o400)
    store = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    generate_key_file(tmp_path / "k")
    creds = CredStore(store, Sealer(tmp_path / "k"))
    result = import_directory(creds, root, actor="test")
    users = sorted(i["user"] for i in result["imported"])
    assert users == ["ben", "cid"], result
    assert creds.info("ben", "box").access_expires_at is None
    assert any("ann" in p["path"] for p in result["problems"])
    store.close()


def test_issuer_keys_must_fit_the_algorithm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from htsec.credmon.issuer import load_issuer

    key = tmp_path / "p384.pem"
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _fs.write_atomic(key, pem, 0o600)
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_PRIVATE_KEY", str(key))
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_ISSUER", "https://issuer.example.org")
    load()
    with pytest.raises(ConfigError, match="P-256"):
        load_issuer("scitokens")


def _wait_for(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path}: {path.read_text(errors='replace')}")


def test_sigterm_during_the_restart_backoff_stops_at_once(cred_root: Path, home: Path) -> None:
    """A worker that cannot start (its database is unusable) is restarted after a back-off;
    SIGTERM during that wait ends the credmon then, not after the wait and another start."""
    err = home.parent / "credmon.err"
    (home.parent / "not-a-dir").write_text("a file where the database's directory should be")
    env = {**os.environ, "_CONDOR_HTSEC_DATABASE_URL": f"sqlite:///{home.parent}/not-a-dir/h.db"}
    with open(err, "w") as fh:
        proc = subprocess.Popen(
            [HTSEC, "credmon", "--cred-dir", str(cred_root)], stderr=fh, stdout=fh, env=env
        )
    try:
        _wait_for(err, "restarting in 2 s", 30)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - t0 < 1.0
    finally:
        proc.kill()
        proc.wait()


def test_sighup_while_the_worker_starts_does_not_kill_it(cred_root: Path, home: Path) -> None:
    """HTCondor's credd SIGHUPs the pid in the directory after every store; the worker
    needs a second or so of imports before its handler is installed."""
    err = home.parent / "credmon.err"
    with open(err, "w") as fh:
        proc = subprocess.Popen([HTSEC, "credmon", "--cred-dir", str(cred_root)], stderr=fh)
    try:
        _wait_for(cred_root / "pid", str(proc.pid), 10)
        for _ in range(20):
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        _wait_for(cred_root / "CREDMON_COMPLETE", "", 30)
        time.sleep(0.5)
        assert proc.poll() is None
        log = err.read_text()
        assert "killed by SIGHUP" not in log and "exited with -1" not in log, log
        assert (cred_root / "alice" / "scitokens.use").is_file()
    finally:
        proc.terminate()
        proc.wait(20)


def _store() -> CredStore:
    s = load()
    return CredStore(open_store(s.database_url), Sealer(s.store_key_file))


@pytest.mark.parametrize("how", ["condor_store_cred delete", "sweep"])
def test_credentials_htcondor_removed_are_forgotten(cred_root: Path, home: Path, how: str) -> None:
    """HTCondor's credd deletes .top and .use (or sweeps the whole user directory): the store
    forgets the credential and no .use comes back. Credentials stored through htsec itself
    (no .top) are left alone."""
    import shutil

    assert run("credmon", "--cred-dir", str(cred_root), "--once").code == 0
    creds = _store()
    creds.put("bob", "box", access_token="bob-at", expires_at=int(time.time()) + 3600)
    assert run("credmon", "--cred-dir", str(cred_root), "--once").code == 0
    assert (cred_root / "bob" / "box.use").is_file()
    alice = cred_root / "alice"
    if how == "sweep":
        shutil.rmtree(alice)
    else:
        (alice / "scitokens.top").unlink()
        (alice / "scitokens.use").chmod(0o600)
        (alice / "scitokens.use").unlink()
    r = run("credmon", "--cred-dir", str(cred_root), "--once")
    assert r.code == 0, r.err
    assert [(c.user, c.service) for c in creds.credentials()] == [("bob", "box")]
    assert not (alice / "scitokens.use").exists()
    assert alice.exists() == (how != "sweep")  # a swept directory is not re-created
    assert (cred_root / "bob" / "box.use").is_file()
    audit = [r for r in creds.audit_log("alice") if r["action"] == "delete"]
    assert audit and audit[-1]["actor"] == "credmon"
    creds.store.close()


def test_a_user_directory_swapped_for_a_symlink_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone who can write to the credential root swaps alice's directory for a symlink
    right after it was checked: the write, the read and the delete refuse to follow it, and
    nothing appears in (or disappears from) the link's target."""
    from htsec.creds.layout import CredDir, TokenName, UseFile
    from htsec.errors import FileSecurityError

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
