"""The credmon inside 'htsec serve' (htsec.credmon.service, htsec.credmon.daemon): unexpected
entries in the credential root are reported problems and the pass goes on; a failed credmon
shows in /v1/health and is restarted with back-off. Real servers and real directory entries:
the faults are what a member of group condor could put in the root."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import run, serving

AT = "access-SECRET-for-service-tests"


@pytest.fixture
def api(home: Path, empty_cred_root: Path) -> Iterator[tuple[httpx.Client, str]]:
    """A real 'htsec serve' with its credmon on ``empty_cred_root``, and alice's token."""
    assert run("key", "create", "POOL").code == 0
    token = run("token", "create", "-i", "alice@pool.example.org").out.strip()
    env = {
        "_CONDOR_SEC_CREDENTIAL_DIRECTORY_OAUTH": str(empty_cred_root),
        "_CONDOR_HTSEC_SERVE_CREDMON": "true",
    }
    with serving(home, env) as client_env:
        url = client_env["_CONDOR_HTSEC_SERVER_URL"]
        with httpx.Client(base_url=url, verify=str(home / "tls" / "ca.pem"), timeout=10) as c:
            yield c, token


def _store(client: httpx.Client, token: str, service: str) -> None:
    r = client.put(
        f"/v1/creds/{service}",
        headers={"Authorization": f"Bearer {token}"},
        json={"access_token": AT, "expires_in": 3600},
    )
    assert r.status_code == 200, r.text


def _until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _credmon(client: httpx.Client) -> dict[str, Any]:
    body = client.get("/v1/health").json()
    return {"status": body["status"], **body.get("credmon", {})}


def test_unexpected_entries_are_problems_and_the_pass_goes_on(
    api: tuple[httpx.Client, str], empty_cred_root: Path, home: Path
) -> None:
    client, token = api
    assert _until((empty_cred_root / "CREDMON_COMPLETE").exists)  # the first pass is done
    (empty_cred_root / "CREDMON_COMPLETE").unlink()
    (empty_cred_root / "CREDMON_COMPLETE").mkdir()  # HTCondor's marker file, as a directory
    (empty_cred_root / "CREDMON_COMPLETE" / "x").write_text("")
    (empty_cred_root / "bob").write_text("not a directory")  # where a user directory would be
    os.mkfifo(empty_cred_root / "carol.mark")
    (empty_cred_root / "dave").symlink_to("/etc")
    _store(client, token, "box")
    use = empty_cred_root / "alice" / "box.use"
    assert _until(use.exists), (home.parent / "serve.log").read_text()
    assert AT in use.read_text()
    state = _until(lambda: (s := _credmon(client))["problems"] and s)
    assert state["status"] == "ok" and state["state"] == "running", state
    log = (home.parent / "serve.log").read_text()
    assert "CREDMON_COMPLETE" in log and "Traceback" not in log
    # The next stored credential is served too: the credmon is still alive.
    _store(client, token, "drive")
    assert _until((empty_cred_root / "alice" / "drive.use").exists)


def test_failed_credmon_shows_in_health_and_restarts(
    api: tuple[httpx.Client, str], empty_cred_root: Path, home: Path
) -> None:
    client, token = api
    assert _until(lambda: _credmon(client).get("state") == "running")
    # The credential root replaced by a regular file: no pass can run.
    saved = empty_cred_root.with_name("saved")
    empty_cred_root.rename(saved)
    empty_cred_root.write_text("")
    _store(client, token, "box")  # wakes the credmon
    failed = _until(lambda: (s := _credmon(client))["state"] == "failed" and s)
    assert failed, _credmon(client)
    assert failed["status"] == "degraded" and failed["error"] == "FileSecurityError"
    assert 0 <= failed["retry_in"] <= 60
    assert str(empty_cred_root) not in str(failed)  # anonymous callers see no paths
    # Still failing on the next attempts: the back-off grows, the restarts are counted.
    again = _until(lambda: (s := _credmon(client))["restarts"] >= 2 and s)
    assert again and again["state"] == "failed", _credmon(client)
    # Repaired: the next restart succeeds and publishes what was stored meanwhile.
    empty_cred_root.unlink()
    shutil.move(saved, empty_cred_root)
    recovered = _until(lambda: (s := _credmon(client))["state"] == "running" and s)
    assert recovered and recovered["status"] == "ok", _credmon(client)
    assert _until((empty_cred_root / "alice" / "box.use").exists)
    log = (home.parent / "serve.log").read_text()
    assert "in-process credmon failed (FileSecurityError" in log and "restarting in" in log
