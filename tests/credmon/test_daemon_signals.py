"""The credmon daemon's contract with HTCondor's credd: pid file, SIGHUP = rescan now, a new
local-issuer .top gets its .use within seconds (the credd waits 20 s), SIGTERM ends it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from htsec.credmon.issuer import generate_key
from tests.conftest import HTSEC, free_port
from tests.credmon.conftest import wait_for_text


def wait_for(cond, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_sighup_rescans_and_sigterm_stops(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "issuer.pem"
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_PRIVATE_KEY", str(key))
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_ISSUER", "https://issuer.example.org")
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_TOKEN_AUDIENCE", "https://storage.example.org")
    generate_key(key)
    root = tmp_path / "creds"
    root.mkdir()
    os.chmod(root, 0o2770)
    port = free_port()
    proc = subprocess.Popen(
        [
            HTSEC,
            "credmon",
            "--cred-dir",
            str(root),
            "--interval",
            "300",
            "--metrics-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_for(lambda: (root / "CREDMON_COMPLETE").exists(), 20)
        pid = int((root / "pid").read_text())
        assert pid == proc.pid
        (root / "bob").mkdir(mode=0o700)
        fd = os.open(root / "bob" / "scitokens.top", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"bob")
        os.close(fd)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGHUP)  # what the credd does after storing
        assert wait_for(lambda: (root / "bob" / "scitokens.use").exists(), 10)
        assert time.monotonic() - t0 < 5
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'htsec_credmon_refreshes_total{provider="scitokens"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if proc.stdout:
            proc.stdout.close()


@pytest.mark.slow
def test_sighup_while_the_worker_starts_does_not_kill_it(cred_root: Path, home: Path) -> None:
    """HTCondor's credd SIGHUPs the pid in the directory after every store; the worker
    needs a second or so of imports before its handler is installed."""
    err = home.parent / "credmon.err"
    with open(err, "w") as fh:
        proc = subprocess.Popen([HTSEC, "credmon", "--cred-dir", str(cred_root)], stderr=fh)
    try:
        wait_for_text(cred_root / "pid", str(proc.pid), 10)
        for _ in range(20):
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        wait_for_text(cred_root / "CREDMON_COMPLETE", "", 30)
        time.sleep(0.5)
        assert proc.poll() is None
        log = err.read_text()
        assert "killed by SIGHUP" not in log and "exited with -1" not in log, log
        assert (cred_root / "alice" / "scitokens.use").is_file()
    finally:
        proc.terminate()
        proc.wait(20)
