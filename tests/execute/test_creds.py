"""htsec.execute.creds: a job's ``.condor_creds`` as HTCondor's starter makes it -- one
single-line ``.use`` per needed token, the access token only, owned by the job's user, 0700/0600
-- HTCondor's hold reason when a token cannot be delivered, one refresh reaching every sandbox
of the user, and nothing left (or touched outside the sandbox) when the job ends."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from htsec.config import load
from htsec.credmon.daemon import Credmon
from htsec.credmon.issuer import generate_key
from htsec.creds.open import open_credstore
from htsec.creds.store import CredStore
from htsec.creds.writes import CREDENTIALS
from htsec.errors import CredentialsUnavailable, FileSecurityError
from htsec.execute.creds import HOLD_REASON, CredDelivery, JobCreds


def job_ids() -> tuple[int, int] | None:
    """The uid and gid jobs run as here (``htsec-slot1``, else ``nobody``), or None when this
    process cannot switch users (then the tests that need one skip)."""
    if os.geteuid() != 0:
        return None
    for name in ("htsec-slot1", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return pw.pw_uid, pw.pw_gid
    return None


needs_root = pytest.mark.skipif(
    job_ids() is None, reason="needs root and an unprivileged user to run jobs as"
)


@pytest.fixture
def creds() -> Iterator[CredStore]:
    store = open_credstore(load())
    yield store
    store.store.close()


@pytest.fixture
def sandboxes() -> Iterator[Path]:
    """Where sandboxes go: a directory every user may traverse (pytest's own is 0700)."""
    base = Path(tempfile.mkdtemp(prefix="htsec-sandboxes-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base)


@pytest.fixture
def delivery(creds: CredStore) -> Iterator[CredDelivery]:
    with CredDelivery(creds, local_wait=10.0) as d:
        yield d


def new_sandbox(base: Path, name: str) -> Path:
    """A sandbox as the execution point makes it: the job user's own, 0700."""
    path = base / name
    path.mkdir(mode=0o700)
    ids = job_ids()
    if ids is not None:
        os.chown(path, *ids)
    return path


def put(creds: CredStore, user: str, wire: str, token: str) -> None:
    service, _, handle = wire.partition("*")
    creds.put(
        user,
        service,
        handle or None,
        refresh_token=f"refresh-{service}-{user}",
        access_token=token,
        expires_at=int(time.time()) + 3600,
        scopes=["read", "write"],
        client_id="client",
        client_secret="a-client-secret",
        token_url="https://idp.example.org/token",
    )


def install(d: CredDelivery, sandbox: Path, user: str, needs: str | list[str]) -> JobCreds:
    ids = job_ids()
    uid, gid = ids if ids is not None else (None, None)
    return d.install(sandbox, user=user, needs=needs, uid=uid, gid=gid)


def wait_for_token(path: Path, token: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and json.loads(path.read_bytes())["access_token"] == token:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} does not hold the new token")


def test_install_writes_one_single_line_use_per_needed_token(
    creds: CredStore, delivery: CredDelivery, sandboxes: Path
) -> None:
    put(creds, "alice", "oidc", "at-oidc")
    put(creds, "alice", "box*work", "at-box")
    put(creds, "alice", "gdrive", "at-not-needed")
    sandbox = new_sandbox(sandboxes, "job1")

    job = install(delivery, sandbox, "alice@pool.example.org", ["oidc", "box*work", "oidc"])

    assert job.environ == {"_CONDOR_CREDS": str(sandbox / ".condor_creds")}
    assert sorted(os.listdir(sandbox / ".condor_creds")) == ["box_work.use", "oidc.use"]
    for stem, token in (("oidc", "at-oidc"), ("box_work", "at-box")):
        data = (sandbox / ".condor_creds" / f"{stem}.use").read_bytes()
        assert b"\n" not in data  # HTCondor's curl plugin reads it line by line
        use = json.loads(data)
        assert use["access_token"] == token
        assert use["token_type"] == "bearer"
        assert 3590 <= use["expires_in"] <= 3600
        assert set(use) <= {"access_token", "token_type", "expires_in", "expires_at", "scope"}
    job.close()


def test_needs_are_read_as_htcondor_splits_oauth_services_needed(
    creds: CredStore, delivery: CredDelivery, sandboxes: Path
) -> None:
    put(creds, "alice", "oidc", "at-oidc")
    put(creds, "alice", "box*work", "at-box")
    sandbox = new_sandbox(sandboxes, "job1")
    job = install(delivery, sandbox, "alice", "oidc, box*work")
    assert sorted(os.listdir(job.directory)) == ["box_work.use", "oidc.use"]
    job.close()
    nothing = install(delivery, new_sandbox(sandboxes, "job2"), "alice", [])
    assert nothing.environ == {}
    assert os.listdir(sandboxes / "job2") == []
    nothing.close()


@needs_root
def test_directory_and_files_belong_to_the_job_user_alone(
    creds: CredStore, delivery: CredDelivery, sandboxes: Path
) -> None:
    uid, gid = job_ids() or (0, 0)
    put(creds, "alice", "oidc", "at-oidc")
    sandbox = new_sandbox(sandboxes, "job1")
    old = os.umask(0)  # the modes are htsec's, not the umask's
    try:
        job = install(delivery, sandbox, "alice", ["oidc"])
    finally:
        os.umask(old)
    st = os.lstat(sandbox / ".condor_creds")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o700, uid, gid)
    st = os.lstat(sandbox / ".condor_creds" / "oidc.use")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, uid, gid)
    # The job (as its user) reads it; the same file after a refresh keeps owner and mode.
    cat = subprocess.run(
        ["cat", str(sandbox / ".condor_creds" / "oidc.use")],
        user=uid,
        group=gid,
        capture_output=True,
        check=True,
    )
    assert json.loads(cat.stdout)["access_token"] == "at-oidc"
    put(creds, "alice", "oidc", "at-oidc-2")
    delivery.notify("alice", "oidc")
    wait_for_token(sandbox / ".condor_creds" / "oidc.use", "at-oidc-2")
    st = os.lstat(sandbox / ".condor_creds" / "oidc.use")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, uid, gid)
    job.close()


def test_a_missing_credential_holds_the_job_with_htcondors_reason(
    creds: CredStore, delivery: CredDelivery, sandboxes: Path
) -> None:
    put(creds, "alice", "oidc", "at-oidc")
    sandbox = new_sandbox(sandboxes, "job1")

    with pytest.raises(CredentialsUnavailable) as caught:
        install(delivery, sandbox, "alice", ["oidc", "box*work"])

    exc = caught.value
    assert exc.hold_reason == HOLD_REASON == "Job credentials are not available"
    assert (exc.hold_code, exc.hold_subcode) == (4, 0)  # CorruptedCredential
    assert [name for name, _ in exc.problems] == ["box*work"]
    assert str(exc).startswith("Job credentials are not available (box*work: ")
    assert not (sandbox / ".condor_creds").exists()
    assert delivery.jobs() == []


def test_a_credential_needing_reauthorisation_holds_the_job(
    creds: CredStore, delivery: CredDelivery, sandboxes: Path
) -> None:
    put(creds, "alice", "oidc", "at-oidc")
    with creds.store.session() as s:
        s.execute(
            update(CREDENTIALS)
            .where(CREDENTIALS.c.user == "alice")
            .values(state="needs_reauth", last_error="the provider refused the refresh token")
        )
    sandbox = new_sandbox(sandboxes, "job1")

    with pytest.raises(CredentialsUnavailable) as caught:
        install(delivery, sandbox, "alice", ["oidc"])

    assert caught.value.hold_reason == "Job credentials are not available"
    assert "needs_reauth" in str(caught.value) and "refused the refresh token" in str(caught.value)
    assert "at-oidc" not in str(caught.value)
    assert not (sandbox / ".condor_creds").exists()


def test_close_removes_the_directory_with_whatever_the_job_left_there(
    creds: CredStore, delivery: CredDelivery, sandboxes: Path
) -> None:
    put(creds, "alice", "oidc", "at-oidc")
    sandbox = new_sandbox(sandboxes, "job1")
    job = install(delivery, sandbox, "alice", ["oidc"])
    (sandbox / ".condor_creds" / "copy.txt").write_text("x")
    (sandbox / ".condor_creds" / "sub" / "deeper").mkdir(parents=True)

    job.close()
    job.close()

    assert os.listdir(sandbox) == []
    assert delivery.jobs() == []


def test_close_removes_a_tree_the_job_nested_deeper_than_the_recursion_limit(
    creds: CredStore, delivery: CredDelivery, sandboxes: Path
) -> None:
    put(creds, "alice", "oidc", "at-oidc")
    sandbox = new_sandbox(sandboxes, "job1")
    job = install(delivery, sandbox, "alice", ["oidc"])
    fd = os.open(sandbox / ".condor_creds", os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # as a job can: mkdir d; cd d; ...
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)
    open_before = len(os.listdir("/proc/self/fd"))

    job.close()

    assert os.listdir(sandbox) == []
    assert delivery.jobs() == []
    assert len(os.listdir("/proc/self/fd")) <= open_before - 2  # sandbox and directory closed


def test_a_job_that_swaps_its_directory_for_a_symlink_moves_nothing_outside(
    creds: CredStore, delivery: CredDelivery, sandboxes: Path, tmp_path: Path
) -> None:
    put(creds, "alice", "oidc", "at-oidc")
    sandbox = new_sandbox(sandboxes, "job1")
    job = install(delivery, sandbox, "alice", ["oidc"])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    os.rename(sandbox / ".condor_creds", sandbox / "moved")
    os.symlink(outside, sandbox / ".condor_creds")

    put(creds, "alice", "oidc", "at-oidc-2")
    delivery.notify("alice", "oidc")
    wait_for_token(sandbox / "moved" / "oidc.use", "at-oidc-2")  # the job's own directory
    job.close()

    assert sorted(os.listdir(outside)) == ["precious"]
    assert (outside / "precious").read_text() == "keep"
    assert (sandbox / ".condor_creds").is_symlink()
    assert os.listdir(sandbox / "moved") == []


def test_a_sandbox_that_has_a_creds_directory_already_is_refused(
    creds: CredStore, delivery: CredDelivery, sandboxes: Path
) -> None:
    put(creds, "alice", "oidc", "at-oidc")
    sandbox = new_sandbox(sandboxes, "job1")
    (sandbox / ".condor_creds").symlink_to("/etc")
    with pytest.raises(FileSecurityError, match="exists already"):
        install(delivery, sandbox, "alice", ["oidc"])
    with pytest.raises(FileSecurityError, match="does not exist"):
        install(delivery, sandboxes / "nope", "alice", ["oidc"])
    assert delivery.jobs() == []


def test_one_refresh_updates_every_sandbox_of_that_user_only(
    creds: CredStore, delivery: CredDelivery, sandboxes: Path
) -> None:
    put(creds, "alice", "oidc", "alice-1")
    put(creds, "bob", "oidc", "bob-1")
    alice = [
        install(delivery, new_sandbox(sandboxes, f"a{i}"), "alice", ["oidc"]) for i in range(5)
    ]
    bob = install(delivery, new_sandbox(sandboxes, "b"), "bob", ["oidc"])
    before = delivery.updates

    put(creds, "alice", "oidc", "alice-2")
    delivery.notify("alice", "oidc")

    for job in alice:
        wait_for_token(job.directory / "oidc.use", "alice-2")
    assert json.loads((bob.directory / "oidc.use").read_bytes())["access_token"] == "bob-1"
    assert delivery.updates - before == 5
    for job in [*alice, bob]:
        job.close()


@pytest.fixture
def local_issuer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "issuer.pem"
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_PRIVATE_KEY", str(key))
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_ISSUER", "https://issuer.example.org")
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_TOKEN_AUDIENCE", "https://storage.example.org")
    generate_key(key, kid="local")


def test_a_local_issuer_token_not_issued_yet_is_asked_for_and_delivered(
    creds: CredStore, sandboxes: Path, local_issuer: None
) -> None:
    """The in-process credmon of ``htsec serve`` (no credential directory): the delivery
    creates the local credential, wakes the credmon and is told when the token is there."""
    credmon = Credmon(load(), cred_dir=None, creds=creds)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(credmon.loop(stop, interval=60.0),),  # only a wake makes it pass again
    )
    thread.start()
    wake = lambda: loop.call_soon_threadsafe(credmon.engine.wake.set)  # noqa: E731
    try:
        with CredDelivery(creds, wake_credmon=wake, local_wait=30.0) as delivery:
            credmon.engine.listeners.append(delivery.notify)
            started = time.monotonic()
            job = install(delivery, new_sandbox(sandboxes, "job1"), "alice", ["scitokens"])
            # Told by the credmon's listener, not by the end of the wait (a bound, not a
            # benchmark: the credmon issues in milliseconds).
            assert time.monotonic() - started < 15
            token = json.loads((job.directory / "scitokens.use").read_bytes())["access_token"]
            assert token.count(".") == 2  # a JWT
            job.close()
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        loop.close()
