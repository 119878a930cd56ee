"""The in-process credmon of 'htsec serve' (htsec.serve.in_process_credmon) lives in the app's
lifespan: it starts with the app, is woken by a stored credential, shows in /v1/health (also
when it could not start, while the API still answers) and stops with the app. The real app
and credmon in this process; the subprocess tests are tests/credmon/test_service.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from htsec.config import load
from htsec.serve import in_process_credmon
from htsec.server import create_app
from htsec.tokens.authority import Authority

AT = "access-SECRET-for-serve-tests"


def _until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


@pytest.fixture
def cred_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "oauth_credentials"
    root.mkdir()
    root.chmod(0o2770)
    monkeypatch.setenv("_CONDOR_SEC_CREDENTIAL_DIRECTORY_OAUTH", str(root))
    return root


def test_credmon_runs_in_the_lifespan_and_is_woken(cred_root: Path, authority: Authority) -> None:
    settings = load()
    app = create_app(settings, authority, lifespan=in_process_credmon(settings))
    alice = {"Authorization": f"Bearer {authority.mint(identity='alice@pool.example.org')}"}
    with TestClient(app) as client:
        running = _until(lambda: client.get("/v1/health").json()["credmon"]["state"] == "running")
        assert running, client.get("/v1/health").json()
        assert client.get("/v1/health").json()["status"] == "ok"
        put = client.put("/v1/creds/box", headers=alice, json={"access_token": AT})
        assert put.status_code == 200, put.text
        use = cred_root / "alice" / "box.use"
        assert _until(use.exists, timeout=5)  # woken: its own period is 10 s
        assert AT in use.read_text()
    assert app.state.health_checks["credmon"]()[1]["state"] == "stopped"


def test_a_credmon_that_cannot_start_degrades_health_only(
    cred_root: Path, authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_CONDOR_BOX_CLIENT_ID", "htsec")
    monkeypatch.setenv("_CONDOR_BOX_TOKEN_AUTH", "private_key_jwt")  # not supported
    settings = load()
    app = create_app(settings, authority, lifespan=in_process_credmon(settings))
    alice = {"Authorization": f"Bearer {authority.mint(identity='alice@pool.example.org')}"}
    with TestClient(app) as client:
        health = client.get("/v1/health").json()
        assert health["status"] == "degraded"
        assert health["credmon"] == {"state": "not started", "error": "ConfigError"}
        assert client.get("/v1/whoami", headers=alice).status_code == 200


def test_without_a_credmon_health_names_none(cred_root: Path, authority: Authority) -> None:
    with TestClient(create_app(load(), authority)) as client:
        health = client.get("/v1/health").json()
    assert health["status"] == "ok" and "credmon" not in health
