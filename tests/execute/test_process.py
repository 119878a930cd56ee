"""htsec.execute.process where the machine gives less: no cgroup v2 sub-group (jobs are ended by
session and by their environment's marker) and no setpriv/prlimit (the server forks)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from htsec.config import load
from htsec.execute import process
from htsec.execute.description import expand
from htsec.execute.point import ExecutePoint
from htsec.store.db import open_store
from tests.execute.conftest import alive
from tests.execute.test_runner import DETACH

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as slot accounts: needs root")


@pytest.fixture
def point(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ExecutePoint, Path]]:
    work = Path(tempfile.mkdtemp(prefix="htsec-proc-", dir="/tmp"))
    work.chmod(0o711)
    monkeypatch.setenv("_CONDOR_EXECUTE", str(work / "execute"))
    monkeypatch.setattr(process, "_SETPRIV", None)  # the forked start
    store = open_store(load().database_url)
    p = ExecutePoint(load(), store, slots=1)
    p.runner.cgroups, p.runner.cgroup_note = None, "no cgroups in this test"
    p.start()
    try:
        yield p, work
    finally:
        p.stop()
        store.close()
        shutil.rmtree(work, ignore_errors=True)


def _run(point: ExecutePoint, iwd: Path, text: str) -> int:
    def procs(cluster: int) -> list[tuple[int, dict[str, Any]]]:
        made = expand(text, cluster=cluster, owner="root", user="root@p", iwd=str(iwd))
        return [(m.proc_id, m.ad) for m in made]

    cluster, _ = point.book.submit(
        owner="root", submitter="t", iwd=str(iwd), text=text, expand=procs
    )
    point.runner.wake()
    return cluster


def test_without_cgroups_a_detached_descendant_still_dies_with_the_job(
    point: tuple[ExecutePoint, Path],
) -> None:
    p, work = point
    iwd = work / "iwd"
    iwd.mkdir()
    (iwd / "detach.sh").write_text(DETACH + "id -un\n")
    (iwd / "detach.sh").chmod(0o755)
    cluster = _run(p, iwd, "executable = detach.sh\noutput = out\nrequest_disk = 1MB\nqueue\n")
    done = threading.Event()
    deadline = time.monotonic() + 30
    while p.book.get(cluster, 0).state in ("idle", "running") and time.monotonic() < deadline:
        done.wait(0.05)
    row = p.book.get(cluster, 0)
    assert row.state == "completed", row
    assert row.cgroup is None
    pid_text, user = (iwd / "out").read_text().split()
    assert user == "htsec-slot1"  # the forked start drops privileges too
    deadline = time.monotonic() + 5
    while alive(int(pid_text)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(int(pid_text))


# A job that leaves a process in a session of its own with an empty environment (no
# HTSEC_JOB_ID marker): without cgroups only its uid, the slot's own account, still finds it.
ESCAPE = """#!/usr/bin/python3
import os, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    pid = os.fork()
    if pid == 0:
        os.execve("/bin/sleep", ["sleep", "300"], {})
    os.write(w, str(pid).encode())
    os._exit(0)
os.wait()
pid = int(os.read(r, 20))
while open(f"/proc/{pid}/environ", "rb").read():
    time.sleep(0.01)
print(pid, flush=True)
"""


def test_without_cgroups_a_process_that_left_session_and_marker_dies_by_the_slots_uid(
    point: tuple[ExecutePoint, Path],
) -> None:
    p, work = point
    iwd = work / "iwd"
    iwd.mkdir()
    (iwd / "escape.py").write_text(ESCAPE)
    (iwd / "escape.py").chmod(0o755)
    cluster = _run(p, iwd, "executable = escape.py\noutput = out\nqueue\n")
    deadline = time.monotonic() + 30
    while p.book.get(cluster, 0).state in ("idle", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.book.get(cluster, 0).state == "completed"
    pid = int((iwd / "out").read_text())
    try:
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(pid)
    finally:
        if alive(pid):
            os.kill(pid, 9)
