"""Crash safety: SIGKILL ``htsec credmon`` at random moments while it refreshes with rotation
on, restart it, and check that every credential still refreshes afterwards (none burnt by
refresh-token reuse, none lost)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from htsec.config import load
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import open_store
from tests.conftest import HTSEC
from tests.oidc import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    default_config,
    obtain_refresh_token,
    provider_fixture,
)
from tests.oidc import Provider as OidcProvider

# 2 s access tokens: each credential is refreshed about every second.
oidc = provider_fixture(default_config(ttl={"AccessToken": 2, "RefreshToken": 3600, "Grant": 3600}))

USERS = 40
TARGET_REFRESHES = int(os.environ.get("HTSEC_CRASH_REFRESHES", "1000"))


def test_sigkill_during_refreshes_loses_nothing(
    oidc: OidcProvider, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, CLIENT_SECRET.encode())
    os.close(fd)
    env = {
        "_CONDOR_OIDC_CLIENT_ID": CLIENT_ID,
        "_CONDOR_OIDC_CLIENT_SECRET_FILE": str(secret),
        "_CONDOR_OIDC_TOKEN_URL": oidc.token_url,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = load()
    generate_key_file(settings.store_key_file)
    creds = CredStore(open_store(settings.database_url), Sealer(settings.store_key_file))
    seen: list[str] = []  # every token string this test handles: none may reach a log
    for i in range(USERS):
        tokens = obtain_refresh_token(
            oidc, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, f"u{i}", "openid"
        )
        creds.put(f"u{i}", "oidc", refresh_token=tokens["refresh_token"])
        seen += [tokens["refresh_token"], tokens["access_token"]]

    rng = random.Random(1234)
    start = oidc.stats()["requests"].get("/token", 0)
    kills = 0
    deadline = time.monotonic() + 120
    log = open(tmp_path / "credmon.log", "a")  # noqa: SIM115
    try:
        while oidc.stats()["requests"].get("/token", 0) - start < TARGET_REFRESHES:
            assert time.monotonic() < deadline, "too slow: credmon stopped refreshing?"
            proc = subprocess.Popen(
                [HTSEC, "credmon", "--interval", "0.5"], stdout=log, stderr=log, env={**os.environ}
            )
            # Killed once its worker refreshes (on a loaded machine its start-up alone can
            # outlast the random delay, and a run would then kill only idle supervisors).
            mark = oidc.stats()["requests"].get("/token", 0)
            while oidc.stats()["requests"].get("/token", 0) == mark:
                assert time.monotonic() < deadline, "too slow: credmon stopped refreshing?"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.2))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
    finally:
        log.close()
    refreshes = oidc.stats()["requests"].get("/token", 0) - start

    # Afterwards, one clean pass: every credential must refresh, none may need re-authorisation.
    from sqlalchemy import text

    with creds.store.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE credentials SET next_attempt_at = NULL, lease_until = NULL, "
                "access_expires_at = 0, failures = 0"
            )
        )
    r = subprocess.run([HTSEC, "credmon", "--once"], capture_output=True, text=True, timeout=60)
    dead = {c.user: c.last_error for c in creds.credentials() if c.state != "active"}
    print(f"{kills} kills during {refreshes} refreshes; after: {r.stdout.strip()}")
    assert dead == {}, f"{len(dead)} credentials burnt after {kills} kills: {dead}"
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{USERS} refreshed" in r.stdout
    for i in range(USERS):
        seen.append(creds.refresh_token(f"u{i}", "oidc") or "")
        seen.append(creds.access_token(f"u{i}", "oidc").access_token)
    logs = (tmp_path / "credmon.log").read_text() + r.stdout + r.stderr
    assert "refreshed;" in logs  # the log is there and readable...
    leaked = [t for t in seen if t and t in logs]
    assert leaked == [], f"{len(leaked)} token strings found in the credmon's logs"
    creds.store.close()
