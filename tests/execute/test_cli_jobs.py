"""htsec.cli.jobs: 'htsec q', 'htsec rm', 'htsec history' against a real 'htsec serve'."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run
from tests.execute.conftest import Point

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as slot accounts: needs root")


def test_q_rm_and_history_show_the_jobs_as_condor_q_does(point: Point, iwd: Path) -> None:
    env = point.env
    tok = iwd.parent / "tok"
    tok.write_text(point.token)
    tok.chmod(0o600)
    args = ("--token-file", str(tok))
    done = point.submit(
        "executable = /bin/echo\narguments = hi\ntransfer_executable = false\nqueue\n", iwd
    )
    point.wait(f"{done}.0", "completed")
    held = point.submit("executable = missing.sh\nqueue\n", iwd)
    point.wait(f"{held}.0", "held")
    running = point.submit(
        "executable = /bin/sleep\narguments = 60\ntransfer_executable = false\nqueue 2\n", iwd
    )
    point.wait(f"{running}.1", "running")

    r = run("q", *args, env=env)
    assert r.code == 0, r.err
    assert "ID" in r.out and "ST" in r.out
    assert f"{running}.0" in r.out and "/bin/sleep 60" in r.out
    assert f"{held}.0 held: Transfer input files failure" in r.out
    assert "Total for query: 3 jobs; 0 completed, 0 removed, 0 idle, 2 running, 1 held" in r.out

    r = run("q", "--json", *args, env=env)
    assert sorted(j["id"] for j in json.loads(r.out)["jobs"]) == sorted(
        [f"{held}.0", f"{running}.0", f"{running}.1"]
    )

    r = run("rm", f"{running}.1", str(held), *args, env=env)
    assert r.code == 0, r.err
    assert f"Job {running}.1 marked for removal" in r.out
    assert f"All jobs in cluster {held} have been marked for removal" in r.out
    point.wait(f"{running}.1", "removed")

    r = run("history", *args, env=env)
    assert r.code == 0, r.err
    assert f"{done}.0" in r.out and "/bin/echo hi" in r.out and f"{running}.1" in r.out
    (done_line,) = [line for line in r.out.splitlines() if line.startswith(f"{done}.0 ")]
    assert " C " in done_line and " 0 " in done_line  # exit code 0 is shown, not blank

    r = run("history", "--json", *args, env=env)
    states = {j["id"]: j["state"] for j in json.loads(r.out)["jobs"]}
    assert states[f"{done}.0"] == "completed" and states[f"{running}.1"] == "removed"

    r = run("rm", "99999", *args, env=env)
    assert r.code == 1
    assert "no active job 99999" in r.err
    r = run("rm", f"{running}.0", *args, env=env)
    assert r.code == 0


@pytest.mark.parametrize("job", ["../creds/box", "1.x", "abc"])
def test_rm_refuses_what_is_not_a_job_id_before_any_request(job: str) -> None:
    # '../creds/box' went out as DELETE /v1/creds/box (httpx resolves the dot segment): the
    # caller's box credential was deleted, then the empty answer ended in a traceback.
    r = run("rm", job, env={"HTSEC_SERVER_URL": "https://127.0.0.1:9"})
    assert r.code == 2  # a usage error
    assert "is not a job id: CLUSTER or CLUSTER.PROC" in r.err
    assert "Traceback" not in r.err
