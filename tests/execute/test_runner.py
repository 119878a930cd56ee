"""htsec.execute.runner: procs run as the job user, in their own sandbox, session and cgroup,
with limits; everything they start dies with them; their files move as HTCondor's do."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.execute.conftest import Point, alive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as slot accounts: needs root")

# A process that double-forks into a session of its own and prints its pid: what a job that
# "daemonizes" leaves behind.
DETACH = """#!/bin/sh
/usr/bin/python3 -c '
import os, sys, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        print(os.getpid(), flush=True)
        os.write(w, b"x")
        time.sleep(300)
    os._exit(0)
os.read(r, 1)
os.wait()
'
"""


def _script(iwd: Path, name: str, text: str) -> None:
    (iwd / name).write_text(text)
    (iwd / name).chmod(0o755)


def _sandboxes(point: Point, job: str) -> list[Path]:
    return sorted(point.execute.glob(f"dir_{job}_*"))


def _printed(sandbox: Path) -> bool:
    out = sandbox / "_condor_stdout"
    return out.exists() and bool(out.read_text().strip())


def test_every_proc_runs_with_its_ids_as_the_job_user_in_a_private_sandbox(
    point: Point, iwd: Path
) -> None:
    _script(iwd, "job.sh", '#!/bin/sh\necho "$(id -un) $1 $2 $(stat -c %a .)"; cat in.txt\n')
    (iwd / "in.txt").write_text("input\n")
    cluster = point.submit(
        "executable = job.sh\narguments = $(ClusterId) $(ProcId)\ntransfer_input_files = in.txt\n"
        "output = out.$(ProcId)\nlog = job.log\nqueue 2\n",
        iwd,
    )
    for proc in (0, 1):
        job = point.wait(f"{cluster}.{proc}", "completed")
        assert job["exit_code"] == 0
        user, rest = (iwd / f"out.{proc}").read_text().split(" ", 1)
        assert user in ("htsec-slot1", "htsec-slot2")  # the slot's own account
        assert rest == f"{cluster} {proc} 700\ninput\n"
    log = (iwd / "job.log").read_text()
    for code in ("000", "001", "005"):
        assert f"{code} ({cluster:03d}.001.000)" in log
    assert not _sandboxes(point, f"{cluster}.0")


def test_a_process_that_forks_and_detaches_dies_when_the_job_ends(point: Point, iwd: Path) -> None:
    _script(iwd, "detach.sh", DETACH)
    cluster = point.submit("executable = detach.sh\noutput = out\nqueue\n", iwd)
    point.wait(f"{cluster}.0", "completed")
    pid = int((iwd / "out").read_text())
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_rm_of_a_running_job_kills_its_detached_descendants(point: Point, iwd: Path) -> None:
    _script(iwd, "job.sh", DETACH + "exec sleep 300\n")
    cluster = point.submit("executable = job.sh\noutput = out\nlog = job.log\nqueue\n", iwd)
    point.wait(f"{cluster}.0", "running")
    deadline = time.monotonic() + 10
    while not [p for p in _sandboxes(point, f"{cluster}.0") if _printed(p)]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (sandbox,) = _sandboxes(point, f"{cluster}.0")
    pid = int((sandbox / "_condor_stdout").read_text())
    assert alive(pid)
    r = point.call("DELETE", f"/v1/jobs/{cluster}")
    assert r.status_code == 200, r.text
    assert r.json() == {"removed": [f"{cluster}.0"]}
    job = point.wait(f"{cluster}.0", "removed")
    deadline = time.monotonic() + 5
    while (alive(pid) or job["ended_at"] is None) and time.monotonic() < deadline:
        time.sleep(0.05)
        job = point.job(f"{cluster}.0")
    assert not alive(pid)
    assert job["ended_at"] is not None
    assert not sandbox.exists()
    assert "009 (" in (iwd / "job.log").read_text()


def test_a_job_that_fills_its_disk_is_held_by_its_file_size_limit(point: Point, iwd: Path) -> None:
    _script(iwd, "fill.sh", "#!/bin/sh\nhead -c 8388608 /dev/zero > big\necho unreachable\n")
    cluster = point.submit(
        "executable = fill.sh\nrequest_disk = 1MB\ntransfer_output_files = big\nqueue\n", iwd
    )
    job = point.wait(f"{cluster}.0", "held")
    assert job["hold_code"] == 34
    assert job["hold_reason"].startswith("The job exceeded request_disk (1048576 bytes)")
    assert sorted(p.name for p in iwd.iterdir()) == ["fill.sh"]


@pytest.mark.parametrize("listed", [True, False])
def test_a_sandbox_symlink_pointing_outside_is_never_followed(
    point: Point, iwd: Path, tmp_path: Path, listed: bool
) -> None:
    secret = point.execute.parent / "secret"  # readable by the job user: only links matter
    secret.write_text("not for the job's owner\n")
    secret.chmod(0o644)
    _script(iwd, "link.sh", f"#!/bin/sh\nln -s {secret} out.txt\n")
    text = "executable = link.sh\n" + ("transfer_output_files = out.txt\n" if listed else "")
    cluster = point.submit(text + "queue\n", iwd)
    job = point.wait(f"{cluster}.0", "held")
    assert job["hold_code"] == 12
    assert "out.txt: a symbolic link (not followed)" in job["hold_reason"]
    assert sorted(p.name for p in iwd.iterdir()) == ["link.sh"]


def test_a_missing_output_file_holds_the_job_and_leaves_no_partial_file(
    point: Point, iwd: Path
) -> None:
    _script(iwd, "job.sh", "#!/bin/sh\necho a > a.txt\n")
    cluster = point.submit(
        "executable = job.sh\ntransfer_output_files = a.txt, b.txt\nqueue\n", iwd
    )
    job = point.wait(f"{cluster}.0", "held")
    assert job["hold_code"] == 12
    assert "b.txt" in job["hold_reason"]
    assert not [p for p in iwd.iterdir() if ".htsec-" in p.name]


def test_an_input_file_the_owner_cannot_read_holds_the_job(point: Point, iwd: Path) -> None:
    _script(iwd, "job.sh", "#!/bin/sh\ntrue\n")
    cluster = point.submit(
        "executable = job.sh\ntransfer_input_files = /nonexistent/in.txt\nqueue\n", iwd
    )
    job = point.wait(f"{cluster}.0", "held")
    assert job["hold_code"] == 13
    assert "/nonexistent/in.txt" in job["hold_reason"]


def test_a_job_past_its_allowed_execute_duration_is_killed_and_held(
    point: Point, iwd: Path
) -> None:
    _script(iwd, "job.sh", "#!/bin/sh\nexec sleep 300\n")
    cluster = point.submit("executable = job.sh\nallowed_execute_duration = 1\nqueue\n", iwd)
    job = point.wait(f"{cluster}.0", "held")
    assert job["hold_code"] == 47


def test_without_transfer_output_files_only_what_the_job_made_or_changed_comes_back(
    point: Point, iwd: Path
) -> None:
    _script(iwd, "job.sh", "#!/bin/sh\necho new > made.txt\necho more >> changed.txt\n")
    (iwd / "kept.txt").write_text("input\n")
    (iwd / "changed.txt").write_text("input\n")
    kept = (iwd / "kept.txt").stat().st_ino
    cluster = point.submit(
        "executable = job.sh\ntransfer_input_files = kept.txt, changed.txt\nqueue\n", iwd
    )
    point.wait(f"{cluster}.0", "completed")
    assert (iwd / "made.txt").read_text() == "new\n"
    assert (iwd / "changed.txt").read_text() == "input\nmore\n"
    assert (iwd / "job.sh").stat().st_mode & 0o777 == 0o755  # not replaced by its copy
    assert (iwd / "kept.txt").stat().st_ino == kept  # not written back


def test_loader_variables_from_the_submit_never_reach_the_launcher_or_the_job(
    point: Point, iwd: Path
) -> None:
    # The launcher runs as root until setpriv: LD_PRELOAD there would load any library as root.
    _script(iwd, "job.sh", "#!/bin/sh\nenv | sort\n")
    cluster = point.submit(
        "executable = job.sh\n"
        'environment = "LD_PRELOAD=/nonexistent/evil.so LD_LIBRARY_PATH=/x KEEP=yes"\n'
        "output = out\nerror = err\nqueue\n",
        iwd,
    )
    point.wait(f"{cluster}.0", "completed")
    out = (iwd / "out").read_text()
    assert "KEEP=yes" in out
    assert "LD_PRELOAD" not in out and "LD_LIBRARY_PATH" not in out
    assert "evil.so" not in (iwd / "err").read_text()
