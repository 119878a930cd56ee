"""``htsec credmon``'s supervisor and worker (credmon/supervisor.py): ``--once`` forks its worker
from the supervisor, so the pass pays for one interpreter start-up, and keeps the worker's crash
safety (its own session; a SIGKILL of the supervisor does not stop the pass)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import HTSEC, run
from tests.credmon.conftest import wait_for_text
from tests.credmon.webserver import top_rt, web_server_writes
from tests.oidc import Provider as OidcProvider
from tests.oidc import inject_fault


def _imported(stderr: str, module: str) -> int:
    """How many processes reported importing ``module`` (``PYTHONPROFILEIMPORTTIME``)."""
    pattern = re.compile(rf"\|\s+{re.escape(module)}$")
    return sum(1 for line in stderr.splitlines() if pattern.search(line))


def test_once_imports_the_credmon_once(cred_root: Path, home: Path) -> None:
    """Each Python process started reports its imports: the store's module is imported by one
    process only, not by a supervisor and a worker each; and nothing a refresh pass does not
    use is imported at all (the IDTOKENS authority, httpx)."""
    r = run("credmon", "--cred-dir", str(cred_root), "--once", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.code == 0, r.err[-2000:]
    assert _imported(r.err, "htsec.creds.store") == 1
    for unused in ("htsec.tokens", "httpx"):
        assert _imported(r.err, unused) == 0, unused
    assert (cred_root / "alice" / "scitokens.use").is_file()
    assert (cred_root / "CREDMON_COMPLETE").exists()


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.slow
def test_once_pass_survives_a_sigkill_of_the_supervisor(
    cred_dir: Path, oidc: OidcProvider, home: Path
) -> None:
    """The supervisor is SIGKILLed while the worker's refresh is in flight (the provider answers
    after 1.5 s): the worker still commits the rotated refresh token and publishes it, so the
    next pass refreshes with it instead of finding the grant burnt by reuse detection."""
    first = web_server_writes(cred_dir, oidc, "alice")
    complete = cred_dir / "CREDMON_COMPLETE"
    complete.touch()
    inject_fault(oidc, "slow", 1, delay_ms=1500)
    proc = subprocess.Popen(
        [HTSEC, "credmon", "--cred-dir", str(cred_dir), "--once"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: not complete.exists(), 30, "the worker never started its pass")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        _wait(complete.exists, 30, "the worker did not finish its pass")
    finally:
        proc.kill()
        proc.wait()
    rotated = top_rt(cred_dir, "alice")
    assert rotated != first
    assert "access_token" in json.loads((cred_dir / "alice" / "oidc.use").read_text())
    os.unlink(cred_dir / "alice" / "oidc.use")
    again = run("credmon", "--cred-dir", str(cred_dir), "--once")
    assert again.code == 0 and "0 need re-authorisation" in again.out, again.out + again.err


@pytest.mark.slow
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
        wait_for_text(err, "restarting in 2 s", 30)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - t0 < 1.0
    finally:
        proc.kill()
        proc.wait()
