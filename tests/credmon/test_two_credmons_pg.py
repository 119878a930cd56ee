"""Two real ``htsec credmon`` daemons (supervisor and worker each, own homes) on one PostgreSQL
store, under contention: 150 credentials with 4 s access tokens at the real oidc-provider rig
(rotation and reuse detection on), both woken by SIGHUP storms so that their passes overlap.
The provider counts how often each refresh token is presented: no refresh token may be
presented twice, and no credential may end up needing re-authorisation.

Where this runs as root, the second daemon runs as pid 1 of its own PID namespace (``unshare
--pid --fork``): with the same host name, neither may mistake the other's pids for dead ones.

Its teeth, tried when it was written: with the claim made racy (the lease check and SKIP
LOCKED dropped) it failed 8 runs of 8 (40-127 refresh tokens presented twice per run); with the
lease holder named ``host:pid`` and reaped by ``kill(pid, 0)`` it failed 2 of 2 (150, 184)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import open_store
from tests import pg
from tests.conftest import HTSEC
from tests.oidc import (
    CLIENT_ID,
    CLIENT_SECRET,
    default_config,
    inject_fault,
    mint_refresh_tokens,
    provider_fixture,
)
from tests.oidc import Provider as OidcProvider

oidc = provider_fixture(default_config(ttl={"AccessToken": 4, "RefreshToken": 3600, "Grant": 3600}))

USERS = 150
RUN_S = 20.0  # of contention, after both daemons refresh


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[str]:
    url = pg.create_database(pg_url)
    try:
        yield url
    finally:
        pg.drop_database(url)


class Daemon:
    """``htsec credmon`` in a process (``namespaced``: as pid 1 of a new PID namespace)."""

    def __init__(self, env: dict[str, str], log: Path, *, namespaced: bool) -> None:
        prefix = ["unshare", "--pid", "--fork", "--kill-child"] if namespaced else []
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [*prefix, HTSEC, "credmon", "--interval", "0.5"], stdout=out, stderr=out, env=env
            )
        self.supervisor = self.proc.pid
        if namespaced:  # the supervisor is unshare's child; signal it by its pid out here
            deadline = time.monotonic() + 10
            while True:
                path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
                kids = path.read_text().split()
                if kids:
                    self.supervisor = int(kids[0])
                    break
                assert time.monotonic() < deadline, "unshare started nothing"
                time.sleep(0.05)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.supervisor, sig)

    def stop(self) -> None:
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def refreshed(self) -> int:
        return self.log.read_text(errors="replace").count(" refreshed; ")


def uses(oidc: OidcProvider) -> dict[str, object]:
    return dict(oidc.stats()["refresh_token_uses"])


def test_two_credmon_daemons_on_postgresql_never_redeem_a_refresh_token_twice(
    oidc: OidcProvider, pg_store: str, tmp_path: Path
) -> None:
    key = tmp_path / "store.key"
    generate_key_file(key)
    creds = CredStore(open_store(pg_store), Sealer(key))
    for i, rt in enumerate(mint_refresh_tokens(oidc, USERS, prefix="pg")):
        creds.put(f"pg{i}", "oidc", refresh_token=rt)
    secret = tmp_path / "client.secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, CLIENT_SECRET.encode())
    os.close(fd)
    base = {k: v for k, v in os.environ.items() if k != "CONDOR_CONFIG"}
    base.update(
        {
            "_CONDOR_HTSEC_DATABASE_URL": pg_store,
            "_CONDOR_HTSEC_STORE_KEY_FILE": str(key),
            "_CONDOR_OIDC_CLIENT_ID": CLIENT_ID,
            "_CONDOR_OIDC_CLIENT_SECRET_FILE": str(secret),
            "_CONDOR_OIDC_TOKEN_URL": oidc.token_url,
        }
    )
    namespaced = os.geteuid() == 0 and shutil.which("unshare") is not None
    daemons: list[Daemon] = []
    try:
        for name, ns in (("a", False), ("b", namespaced)):
            env = {**base, "HTSEC_HOME": str(tmp_path / f"home-{name}")}
            daemons.append(Daemon(env, tmp_path / f"credmon-{name}.log", namespaced=ns))
        deadline = time.monotonic() + 60
        while not all(d.refreshed() for d in daemons):
            assert time.monotonic() < deadline, "the daemons did not start refreshing"
            time.sleep(0.2)
        start = uses(oidc)["presented"]
        # Some answers take a while, as a busy provider's do: leases are held for longer.
        inject_fault(oidc, "slow", 4 * USERS, delay_ms=300)
        end = time.monotonic() + RUN_S
        rng = random.Random(99)
        while time.monotonic() < end:  # a SIGHUP storm: "rescan now", to one or the other
            rng.choice(daemons).signal(signal.SIGHUP)
            time.sleep(rng.uniform(0.02, 0.1))
    finally:
        for d in daemons:
            d.stop()
    counted = uses(oidc)
    dead = {c.user: c.last_error for c in creds.credentials() if c.state != "active"}
    creds.store.close()
    print(
        f"two credmons{' (one in its own PID namespace)' if namespaced else ''}: "
        f"{counted['presented']} refresh grants ({counted['presented'] - start} during the "  # type: ignore[operator]
        f"storm), {counted['distinct']} refresh tokens, refreshed by each: "
        f"{[d.refreshed() for d in daemons]}, presented twice: {len(counted['reused'])}"  # type: ignore[arg-type]
    )
    assert counted["reused"] == {}, f"refresh tokens presented more than once: {counted}"
    assert dead == {}, f"{len(dead)} credentials burnt: {dead}"
    assert counted["presented"] - start >= USERS  # type: ignore[operator]  # contention was real
