"""A real 'htsec serve' with its execution point, and a client that submits and waits.

Jobs run as the slot accounts htsec-slot<N> (scripts/setup creates them), so the sandboxes go in
a directory those users can reach (pytest's own temporary directories are 0700 root's)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import HTSEC, free_port, run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as slot accounts: needs root")


@dataclass
class Point:
    """A running 'htsec serve' and what a test needs to use its jobs API."""

    home: Path
    execute: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    token: str = ""
    logs: list[Path] = field(default_factory=list)
    _log: Any = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        log_path = self.home.parent / f"serve{len(self.logs)}.log"
        self.logs.append(log_path)
        self._log = log = open(log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen([HTSEC, "serve"], env=self.env, stdout=log, stderr=log)
        ca = self.home / "tls" / "ca.pem"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if ca.exists() and httpx.get(f"{self.url}/v1/health", verify=str(ca)).is_success:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(log_path.read_text())
            time.sleep(0.1)
        if not self.token:
            r = run(
                "token",
                "create",
                "--identity",
                "root@pool.example.org",
                "--lifetime",
                "3600",
                env=self.env,
            )
            assert r.code == 0, r.err
            self.token = r.out.strip()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(20)
        self.proc = None
        self._log.close()

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}{path}",
            verify=str(self.home / "tls" / "ca.pem"),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
            **kw,
        )

    def submit(self, text: str, iwd: Path) -> int:
        r = self.call("POST", "/v1/jobs", json={"submit": text, "iwd": str(iwd)})
        assert r.status_code == 201, r.text
        return int(r.json()["cluster"])

    def job(self, job: str) -> dict[str, Any]:
        for history in ("false", "true"):
            for j in self.call("GET", "/v1/jobs", params={"history": history}).json()["jobs"]:
                if j["id"] == job:
                    return dict(j)
        raise AssertionError(f"no job {job}")

    def wait(self, job: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            j = self.job(job)
            if j["state"] in states:
                return j
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} is {j['state']}, not {states}: {j}")
            time.sleep(0.05)


@pytest.fixture
def execute_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="htsec-exec-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def point(home: Path, execute_dir: Path) -> Iterator[Point]:
    port = free_port()
    env = {
        **os.environ,
        "_CONDOR_HTSEC_SERVER_URL": f"https://127.0.0.1:{port}",
        "_CONDOR_HTSEC_SERVE_CREDMON": "false",
        "_CONDOR_EXECUTE": str(execute_dir / "execute"),
    }
    p = Point(home, execute_dir / "execute", port, env)
    p.start()
    try:
        yield p
    finally:
        if p.proc is not None:
            p.stop()


@pytest.fixture
def iwd(tmp_path: Path) -> Path:
    d = tmp_path / "iwd"
    d.mkdir()
    return d


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
