"""htsec.execute.slots: each slot runs its jobs as its own account, so a job of one user cannot
read the running sandbox, nor the delivered tokens, of another user's job on another slot."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from htsec.config import load
from htsec.execute.slots import slot_users
from tests.conftest import run
from tests.execute.conftest import Point

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as slot accounts: needs root")

# Job B: says who it is, then waits (its sandbox and token stay) until the test lets it go.
WAITER = """#!/bin/sh
id -u > "$1/b.uid"
while [ ! -e "$1/go" ]; do sleep 0.05; done
"""

# Job A: tries to read B's sandbox and B's token file for real and prints what happened.
READER = """#!/usr/bin/python3
import os, sys
print(os.getuid())
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path).read()
        print(path, "READ")
    except OSError as exc:
        print(path, __import__("errno").errorcode[exc.errno])
"""


def _state(client: httpx.Client, job: str) -> dict[str, object]:
    for history in ("false", "true"):
        for j in client.get("/v1/jobs", params={"history": history}).json()["jobs"]:
            if j["id"] == job:
                return dict(j)
    raise AssertionError(f"no job {job}")


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory both jobs' owners and slot accounts can use (for the rendezvous)."""
    d = Path(tempfile.mkdtemp(prefix="htsec-slots-", dir="/tmp"))
    d.chmod(0o1777)
    yield d
    (d / "go").touch()  # job B ends whatever happened
    shutil.rmtree(d, ignore_errors=True)


def _slot_accounts(n: int) -> bool:
    try:
        for i in range(1, n + 1):
            pwd.getpwnam(f"htsec-slot{i}")
    except KeyError:
        return False
    return True


@pytest.mark.skipif(
    not _slot_accounts(2), reason="needs htsec-slot1 and htsec-slot2: run scripts/setup --test"
)
def test_jobs_of_two_users_on_two_slots_cannot_read_each_others_sandbox_or_token(
    point: Point, shared: Path
) -> None:
    point.stop()
    point.env["_CONDOR_HTSEC_EXECUTE_SLOTS"] = "2"
    point.start()
    nobody = pwd.getpwnam("nobody")
    # User B (nobody): a stored token, a job that holds its sandbox open.
    made = run(
        "token",
        "create",
        "--identity",
        "nobody@pool.example.org",
        "--lifetime",
        "3600",
        env=point.env,
    )
    assert made.code == 0, made.err
    b = httpx.Client(
        base_url=point.url,
        verify=str(point.home / "tls" / "ca.pem"),
        headers={"Authorization": f"Bearer {made.out.strip()}"},
        timeout=30,
        limits=httpx.Limits(max_keepalive_connections=0),  # serve's stop waits for none
    )
    r = b.put("/v1/creds/box", json={"access_token": "b-secret-token", "expires_in": 3600})
    assert r.status_code == 200, r.text
    iwd_b = shared / "b"
    iwd_b.mkdir()
    os.chown(iwd_b, nobody.pw_uid, nobody.pw_gid)
    (iwd_b / "wait.sh").write_text(WAITER)
    (iwd_b / "wait.sh").chmod(0o755)
    r = b.post(
        "/v1/jobs",
        json={
            "submit": f"executable = wait.sh\narguments = {shared}\nuse_oauth_services = box\n"
            "queue\n",
            "iwd": str(iwd_b),
        },
    )
    assert r.status_code == 201, r.text
    job_b = f"{r.json()['cluster']}.0"
    deadline = time.monotonic() + 30
    while not (shared / "b.uid").exists():
        assert _state(b, job_b)["state"] in ("idle", "running"), _state(b, job_b)
        assert time.monotonic() < deadline, "job B did not start"
        time.sleep(0.05)
    (sandbox_b,) = point.execute.glob(f"dir_{job_b}_*")
    token_b = sandbox_b / ".condor_creds" / "box.use"
    assert token_b.read_text().count("b-secret-token") == 1

    # User A (root): a job on the other slot, while B runs, tries to read B's files.
    iwd_a = shared / "a"
    iwd_a.mkdir()
    (iwd_a / "read.py").write_text(READER)
    (iwd_a / "read.py").chmod(0o755)
    cluster_a = point.submit(
        f"executable = read.py\narguments = {sandbox_b} {token_b}\noutput = out\nqueue\n", iwd_a
    )
    job_a = point.wait(f"{cluster_a}.0", "completed", "held")
    (shared / "go").touch()
    assert job_a["state"] == "completed", job_a
    while _state(b, job_b)["state"] in ("idle", "running") and time.monotonic() < deadline + 30:
        time.sleep(0.05)
    assert _state(b, job_b)["state"] == "completed", _state(b, job_b)

    uid_a, *tries = (iwd_a / "out").read_text().splitlines()
    uid_b = (shared / "b.uid").read_text().strip()
    assert uid_a != uid_b
    names = {pwd.getpwuid(int(uid_a)).pw_name, pwd.getpwuid(int(uid_b)).pw_name}
    assert names == {"htsec-slot1", "htsec-slot2"}
    assert tries == [f"{sandbox_b} EACCES", f"{token_b} EACCES"]


def test_a_missing_slot_account_is_named_with_how_to_make_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("_CONDOR_SLOT2_USER", "no-such-account-here")
    load()
    got = slot_users(2)
    assert got.slots == ()
    assert got.problem == "SLOT2_USER = no-such-account-here names no account here"
    monkeypatch.delenv("_CONDOR_SLOT2_USER")
    load()
    got = slot_users(999)
    assert got.slots == ()
    assert got.problem is not None and "htsec-slot" in got.problem
    assert "run scripts/setup as root with HTSEC_EXECUTE_SLOTS=999" in got.problem


def test_slot_user_is_honoured_and_two_slots_never_share_a_uid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("_CONDOR_SLOT1_USER", "nobody")
    monkeypatch.setenv("_CONDOR_SLOT2_USER", "nobody")
    load()
    got = slot_users(2)
    assert got.slots == () and got.problem is not None and "both run jobs as uid" in got.problem
    monkeypatch.setenv("_CONDOR_SLOT2_USER", "root")
    load()
    assert "never root" in (slot_users(2).problem or "")
    if not _slot_accounts(2):
        pytest.skip("needs htsec-slot2")
    monkeypatch.delenv("_CONDOR_SLOT2_USER")
    monkeypatch.setenv("_CONDOR_DEDICATED_EXECUTE_ACCOUNT_REGEXP", "nob.*")
    load()
    one, two = slot_users(2).slots
    assert (one.user.name, one.dedicated) == ("nobody", True)
    assert (two.user.name, two.dedicated) == ("htsec-slot2", True)
    monkeypatch.setenv("_CONDOR_DEDICATED_EXECUTE_ACCOUNT_REGEXP", "nob")  # whole name only
    load()
    assert not slot_users(2).slots[0].dedicated
