"""``htsec credmon`` never redeems a refresh token whose result it cannot publish, publishes a
result that could not be written when the provider answered at the next pass without a second
token request, and counts every such credential as failed (exit status, summary, one line)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import pytest

from htsec.config import load
from htsec.credmon.daemon import Credmon
from tests.conftest import HTSEC, run
from tests.credmon.webserver import login, make_root, provider_env, read_json, token_requests
from tests.oidc import (
    CLIENT_ID,
    CLIENT_SECRET,
    clear_faults,
    default_config,
    inject_fault,
    introspect,
    provider_fixture,
)
from tests.oidc import Provider as OidcProvider

oidc = provider_fixture(default_config())
CLIENT = (CLIENT_ID, CLIENT_SECRET)


@pytest.fixture
def root(tmp_path: Path, oidc: OidcProvider, monkeypatch: pytest.MonkeyPatch) -> Path:
    provider_env(monkeypatch, tmp_path, oidc)
    clear_faults(oidc)
    return make_root(tmp_path)


def active(oidc: OidcProvider, token: str) -> bool:
    return bool(introspect(oidc, CLIENT, token)["active"])


@pytest.mark.slow
def test_no_refresh_token_is_redeemed_for_a_directory_that_cannot_take_it(
    root: Path, oidc: OidcProvider, home: Path
) -> None:
    alice = login(root, oidc, "alice")
    login(root, oidc, "bob")
    top = (root / "alice" / "oidc.top").read_bytes()
    (root / "alice").chmod(0o2775)  # group-writable: anyone in group condor could swap a file
    before = token_requests(oidc)

    r = run("credmon", "--cred-dir", str(root), "--once")

    assert r.code == 1, r.out + r.err
    assert "1 refreshed" in r.out and "1 failed" in r.out, r.out
    assert token_requests(oidc) - before == 1  # bob's; alice's refresh token was not sent
    assert (root / "alice" / "oidc.top").read_bytes() == top
    assert active(oidc, alice["refresh_token"])
    assert "Traceback" not in r.err, r.err
    assert f"fix: chmod go-w {root / 'alice'}" in r.err, r.err

    (root / "alice").chmod(0o2755)  # the administrator's fix; looked at again 1 s later
    # The next pass, in process with its clock 1.1 s on (not slept for): ok is what makes
    # `htsec credmon --once` exit 0.
    credmon = Credmon(load(), cred_dir=root)
    try:
        credmon.engine.clock = lambda: time.time() + 1.1
        result = asyncio.run(credmon.one_pass())
    finally:
        credmon.close()
    assert result.ok, result
    assert token_requests(oidc) - before == 2
    rotated = read_json(root / "alice" / "oidc.top")["refresh_token"]
    assert rotated != alice["refresh_token"] and active(oidc, rotated)


def _wait_for_token_requests(oidc: OidcProvider, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while token_requests(oidc) < count:
        assert time.monotonic() < deadline, "the credmon sent no token request"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_result_not_published_is_published_next_pass_without_a_token_request(
    root: Path, oidc: OidcProvider, home: Path
) -> None:
    """The directory is fine when the credmon checks it, and made group-writable while the
    provider is answering (slowly): the rotated refresh token is already committed to the
    store, so the next pass publishes it without redeeming anything."""
    first = login(root, oidc, "alice")
    before = token_requests(oidc)
    inject_fault(oidc, "slow", delay_ms=3000)
    proc = subprocess.Popen(
        [HTSEC, "credmon", "--cred-dir", str(root), "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        _wait_for_token_requests(oidc, before + 1)
        (root / "alice").chmod(0o2775)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, out + err
    assert "0 refreshed" in out and "1 failed" in out, out
    assert "Traceback" not in err, err
    logged = [line for line in err.splitlines() if "ERROR htsec.credmon" in line]
    assert len(logged) == 1 and "not published" in logged[0], err
    assert "fix: chmod go-w" in logged[0], err
    assert f"alice/oidc: not published: user credential directory {root / 'alice'}" in err
    assert read_json(root / "alice" / "oidc.use")["access_token"] == first["access_token"]

    (root / "alice").chmod(0o2755)
    r = run("credmon", "--cred-dir", str(root), "--once")

    assert r.code == 0, r.out + r.err
    assert token_requests(oidc) == before + 1  # published from the store, nothing redeemed
    use = read_json(root / "alice" / "oidc.use")
    top = read_json(root / "alice" / "oidc.top")
    assert use["access_token"] != first["access_token"] and active(oidc, use["access_token"])
    assert top["refresh_token"] != first["refresh_token"] and active(oidc, top["refresh_token"])
