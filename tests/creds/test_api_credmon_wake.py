"""How the credd API wakes a credmon after a stored credential (htsec.creds.api): the
in-process credmon of 'htsec serve' directly, never through ``<cred dir>/pid``; for 'htsec
credd', the pid file is read bounded, without blocking or following links, and only from the
credmon's user. Everyone who can write the credential root (group ``condor``) can plant one.
Real servers, real processes, real files."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run, serving

AT = "access-SECRET-for-wake-tests"


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[bytes]]:
    """A process SIGHUP would kill (sleep keeps the default disposition)."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def _alive(proc: subprocess.Popen[bytes], settle: float = 0.5) -> bool:
    time.sleep(settle)
    return proc.poll() is None


def _store(url: str, ca: str, token: str, service: str) -> httpx.Response:
    return httpx.put(
        f"{url}/v1/creds/{service}",
        headers={"Authorization": f"Bearer {token}"},
        json={"access_token": AT, "expires_in": 3600},
        verify=ca,
        timeout=10,
    )


def test_credd_reads_pid_file_safely(
    home: Path, empty_cred_root: Path, victim: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    assert run("key", "create", "POOL").code == 0
    token = run("token", "create", "-i", "alice@pool.example.org").out.strip()
    pid_file = empty_cred_root / "pid"
    env = {"_CONDOR_SEC_CREDENTIAL_DIRECTORY_OAUTH": str(empty_cred_root)}
    with serving(home, env, command="credd") as client_env:
        url, ca = client_env["_CONDOR_HTSEC_SERVER_URL"], str(home / "tls" / "ca.pem")

        # A FIFO: reading it would block the worker (and, repeated, the whole API) forever.
        os.mkfifo(pid_file, 0o660)
        assert _store(url, ca, token, "fifo").status_code == 200
        pid_file.unlink()

        # Longer than the 255 bytes HTCondor's credd reads: refused, not cut and used.
        pid_file.write_text(f"{victim.pid}".ljust(4096))
        assert _store(url, ca, token, "big").status_code == 200
        assert _alive(victim)
        pid_file.unlink()

        # A symlink to a file holding the pid: not followed.
        target = tmp_path / "elsewhere"
        target.write_text(str(victim.pid))
        pid_file.symlink_to(target)
        assert _store(url, ca, token, "link").status_code == 200
        assert _alive(victim)
        pid_file.unlink()

        if os.geteuid() == 0:  # another user's file (needs root to plant it)
            pid_file.write_text(str(victim.pid))
            os.chown(pid_file, 65534, 65534)
            assert _store(url, ca, token, "other").status_code == 200
            assert _alive(victim)
            pid_file.unlink()

        # The credmon's own file: signalled, as HTCondor's credd does.
        pid_file.write_text(str(victim.pid))
        assert _store(url, ca, token, "real").status_code == 200
        assert victim.wait(10) == -1  # killed by SIGHUP
    log = (home.parent / "serve.log").read_text()
    assert "not waking the credmon" in log and "is not a regular file" in log
    assert "Traceback" not in log


def test_serve_wakes_its_credmon_directly(
    home: Path, empty_cred_root: Path, victim: subprocess.Popen[bytes]
) -> None:
    """With the in-process credmon the pid file is never used: a valid-looking one naming
    another process does not get it signalled, and the credential is published at once."""
    assert run("key", "create", "POOL").code == 0
    token = run("token", "create", "-i", "alice@pool.example.org").out.strip()
    (empty_cred_root / "pid").write_text(str(victim.pid))
    env = {
        "_CONDOR_SEC_CREDENTIAL_DIRECTORY_OAUTH": str(empty_cred_root),
        "_CONDOR_HTSEC_SERVE_CREDMON": "true",
    }
    with serving(home, env) as client_env:
        url, ca = client_env["_CONDOR_HTSEC_SERVER_URL"], str(home / "tls" / "ca.pem")
        time.sleep(1)  # the credmon's first pass, at start, is done
        assert _store(url, ca, token, "box").status_code == 200
        use = empty_cred_root / "alice" / "box.use"
        deadline = time.monotonic() + 5  # the credmon's own period is 10 s
        while not use.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert use.exists() and AT in use.read_text()
        assert _alive(victim)
