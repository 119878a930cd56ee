"""htsec.execute.asuser: a job's own files are read and written with its owner's permissions,
never the server's (root's)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run
from tests.execute.conftest import Point

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as slot accounts: needs root")


@pytest.fixture
def nobody_iwd() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="htsec-nobody-", dir="/tmp"))
    d.chmod(0o755)
    nobody = pwd.getpwnam("nobody")
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _submit_as_nobody(point: Point, text: str, iwd: Path) -> int:
    token = run("token", "create", "--identity", "nobody@pool.example.org", env=point.env)
    assert token.code == 0, token.err
    r = httpx.post(
        f"{point.url}/v1/jobs",
        json={"submit": text, "iwd": str(iwd)},
        headers={"Authorization": f"Bearer {token.out.strip()}"},
        verify=str(point.home / "tls" / "ca.pem"),
    )
    assert r.status_code == 201, r.text
    point.token = token.out.strip()  # list the owner's jobs from now on
    return int(r.json()["cluster"])


def test_a_file_only_root_can_read_is_not_read_for_another_owner(
    point: Point, nobody_iwd: Path
) -> None:
    secret = nobody_iwd / "root-only.txt"
    secret.write_text("root's\n")
    secret.chmod(0o600)  # root's, in the owner's own directory
    cluster = _submit_as_nobody(
        point,
        "executable = /bin/cat\ntransfer_executable = false\narguments = root-only.txt\n"
        "transfer_input_files = root-only.txt\noutput = out\nqueue\n",
        nobody_iwd,
    )
    job = point.wait(f"{cluster}.0", "held", "completed")
    assert job["state"] == "held"
    assert job["hold_code"] == 13
    assert "as nobody: Permission denied" in job["hold_reason"]
    assert not (nobody_iwd / "out").exists()


def test_output_is_written_as_the_owner(point: Point, nobody_iwd: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    cluster = _submit_as_nobody(
        point,
        "executable = /bin/echo\ntransfer_executable = false\narguments = hi\noutput = out\n"
        "log = job.log\nqueue\n",
        nobody_iwd,
    )
    point.wait(f"{cluster}.0", "completed")
    assert (nobody_iwd / "out").read_text() == "hi\n"
    assert (nobody_iwd / "out").stat().st_uid == nobody.pw_uid
    assert (nobody_iwd / "job.log").stat().st_uid == nobody.pw_uid
