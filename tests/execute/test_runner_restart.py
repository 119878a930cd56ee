"""htsec.execute.runner across an 'htsec serve' restart: a proc that was running when serve
died is reported, what was left of it is killed, and it runs again (never silently lost)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.execute.conftest import Point, alive

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as slot accounts: needs root"),
    # Each stops and starts htsec serve around a running job (6-7 s a test here).
    pytest.mark.slow,
]


def test_a_job_running_when_serve_is_killed_runs_again_after_the_restart(
    point: Point, iwd: Path
) -> None:
    (iwd / "job.sh").write_text('#!/bin/sh\necho "pid $$"\nsleep 3\necho done\n')
    (iwd / "job.sh").chmod(0o755)
    cluster = point.submit("executable = job.sh\noutput = out\nlog = job.log\nqueue\n", iwd)
    point.wait(f"{cluster}.0", "running")
    deadline = time.monotonic() + 10
    first = None
    while first is None:
        for sandbox in point.execute.glob(f"dir_{cluster}.0_*"):
            out = sandbox / "_condor_stdout"
            if out.exists() and out.read_text().startswith("pid "):
                first = int(out.read_text().split()[1])
        assert time.monotonic() < deadline
        time.sleep(0.05)
    point.stop(signal.SIGKILL)
    assert alive(first)  # the job outlived serve: its own session and cgroup
    point.start()
    job = point.wait(f"{cluster}.0", "completed", timeout=30)
    assert job["restarts"] == 1
    assert job["runs"] == 2
    assert "was running when htsec serve stopped" in job["note"]
    assert not alive(first)
    assert (iwd / "out").read_text().endswith("done\n")
    assert "004 (" in (iwd / "job.log").read_text()  # evicted, then run again
    assert "was running when htsec serve stopped" in point.logs[-1].read_text()


def test_a_job_cut_short_by_a_clean_stop_runs_again(point: Point, iwd: Path) -> None:
    (iwd / "job.sh").write_text("#!/bin/sh\nsleep 2\necho done\n")
    (iwd / "job.sh").chmod(0o755)
    cluster = point.submit("executable = job.sh\noutput = out\nqueue\n", iwd)
    point.wait(f"{cluster}.0", "running")
    time.sleep(0.3)
    point.stop(signal.SIGTERM)
    point.start()
    job = point.wait(f"{cluster}.0", "completed", timeout=30)
    assert job["runs"] == 2
    assert (iwd / "out").read_text() == "done\n"
