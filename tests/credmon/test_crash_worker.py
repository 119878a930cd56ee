"""SIGKILL of the credmon's worker (the process that refreshes) against the real oidc-provider
rig with rotation and reuse detection on.

What a kill can cost is bounded: a refresh is marked in flight in the store when it is claimed
(before anything is sent), its slot among the ``concurrency`` (16) requests is held until its
answer is committed, and answers are committed as they arrive. After a restart each refresh
left in flight is tried once with the refresh token held before it: if the provider had not
rotated it, the refresh simply succeeds; if it had (the answer died with the worker), the
credential is marked ``needs_reauth`` with the reason "rotation lost in a crash" -- never
silently."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from htsec.config import load
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import open_store
from tests.conftest import HTSEC
from tests.oidc import (
    CLIENT_ID,
    CLIENT_SECRET,
    clear_faults,
    default_config,
    inject_fault,
    mint_refresh_tokens,
    provider_fixture,
)
from tests.oidc import Provider as OidcProvider

# 2 s access tokens: every credential is due about every second.
oidc = provider_fixture(default_config(ttl={"AccessToken": 2, "RefreshToken": 3600, "Grant": 3600}))

CONCURRENCY = 16  # the worker's default refreshes in flight (Policy.concurrency)
LOST = "rotation lost in a crash"
KILLS = int(os.environ.get("HTSEC_CRASH_KILLS", "8"))  # read before the fixtures clean HTSEC_*


@pytest.fixture
def creds(
    oidc: OidcProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CredStore]:
    secret = tmp_path / "secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, CLIENT_SECRET.encode())
    os.close(fd)
    monkeypatch.setenv("_CONDOR_OIDC_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("_CONDOR_OIDC_CLIENT_SECRET_FILE", str(secret))
    monkeypatch.setenv("_CONDOR_OIDC_TOKEN_URL", oidc.token_url)
    settings = load()
    generate_key_file(settings.store_key_file)
    cs = CredStore(open_store(settings.database_url), Sealer(settings.store_key_file))
    yield cs
    cs.store.close()


def add_users(creds: CredStore, oidc: OidcProvider, n: int, prefix: str) -> None:
    for i, rt in enumerate(mint_refresh_tokens(oidc, n, prefix=prefix)):
        creds.put(f"{prefix}{i}", "oidc", refresh_token=rt)


def token_requests(oidc: OidcProvider) -> int:
    return int(oidc.stats()["requests"].get("/token", 0))


def start_worker(log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "htsec.credmon.worker", "--interval", "0.5"],
            stdout=out,
            stderr=out,
            env={**os.environ},
        )


def wait_for(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def in_flight(creds: CredStore, sent_by: int | None = None) -> int:
    """Credentials marked in flight, without a recorded outcome (marked by ``sent_by``)."""
    q = "SELECT count(*) FROM credentials WHERE refresh_sent_at IS NOT NULL"
    if sent_by is not None:
        q += f" AND refresh_sent_at <= {int(sent_by)}"
    with creds.store.engine.connect() as conn:
        return int(conn.execute(text(q)).scalar_one())


def states(creds: CredStore) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in creds.credentials():
        key = c.state if c.state != "needs_reauth" else f"needs_reauth: {c.last_error}"
        out.setdefault(key, []).append(c.user)
    return out


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_worker_sigkill_with_every_slot_answered_costs_exactly_its_concurrency(
    creds: CredStore, oidc: OidcProvider, tmp_path: Path
) -> None:
    """The worst case, made to happen: the provider has rotated the refresh tokens of all 16
    refreshes in flight and holds their answers back when the worker is killed. Exactly those
    16 are lost -- each marked needs_reauth with the reason -- and the other 24 refresh."""
    add_users(creds, oidc, 40, "late")
    inject_fault(oidc, "late", CONCURRENCY, delay_ms=20_000)
    start = token_requests(oidc)
    worker = start_worker(tmp_path / "worker.log")
    try:
        wait_for("16 requests", lambda: token_requests(oidc) - start >= CONCURRENCY, 60)
        time.sleep(1.0)  # the provider has processed them; their answers are held back
        assert token_requests(oidc) - start == CONCURRENCY  # no slot is free for a 17th
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        stop(worker)
    assert in_flight(creds) == 40  # all were claimed (one batch): recorded before any was sent
    clear_faults(oidc)

    worker = start_worker(tmp_path / "worker.log")
    try:
        wait_for(
            "every credential handled",
            lambda: (
                in_flight(creds) == 0
                and all(c.state != "active" or c.has_access_token for c in creds.credentials())
            ),
            60,
        )
    finally:
        stop(worker)
    found = states(creds)
    lost = [k for k in found if k.startswith("needs_reauth")]
    assert len(lost) == 1 and LOST in lost[0], found
    assert len(found[lost[0]]) == CONCURRENCY
    assert len(found["active"]) == 40 - CONCURRENCY


def test_worker_sigkills_at_random_cost_at_most_what_was_in_flight(
    creds: CredStore, oidc: OidcProvider, tmp_path: Path
) -> None:
    """Kill -9 the worker at random moments while it refreshes 60 credentials every second or
    so; after each kill a new worker settles what was in flight. Each kill costs at most the
    16 requests in flight (and never more than were marked), each one marked with the reason;
    no credential is lost any other way. The numbers are printed for the docs."""
    add_users(creds, oidc, 60, "rand")
    rng = random.Random(4321)
    kills = KILLS
    log = tmp_path / "worker.log"
    start = token_requests(oidc)
    at_risk: list[int] = []
    cost: list[int] = []
    lost_before = 0
    worker = start_worker(log)
    try:
        for _ in range(kills):
            mark = token_requests(oidc)
            wait_for("the worker refreshing", lambda: token_requests(oidc) - mark >= 30, 60)
            time.sleep(rng.uniform(0.0, 0.5))
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            killed_at = time.time()
            at_risk.append(in_flight(creds))
            worker = start_worker(log)
            wait_for(
                "the refreshes left in flight settled",
                lambda: in_flight(creds, sent_by=killed_at) == 0,
                60,
            )
            lost_now = sum(1 for c in creds.credentials() if c.state == "needs_reauth")
            cost.append(lost_now - lost_before)
            lost_before = lost_now
    finally:
        stop(worker)
    refreshes = token_requests(oidc) - start
    found = states(creds)
    print(
        f"{kills} worker SIGKILLs during {refreshes} token requests: marked in flight at each kill "
        f"{at_risk} (max {max(at_risk)}), credentials lost per kill {cost} "
        f"(max {max(cost)}, total {sum(cost)})"
    )
    assert max(cost) <= CONCURRENCY
    assert all(c <= r for c, r in zip(cost, at_risk, strict=True)), (cost, at_risk)
    assert set(found) <= {"active"} | {k for k in found if LOST in k}, found


def oom_score_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def worker_of(supervisor: int) -> int | None:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    return int(children[0]) if children else None


def test_the_worker_is_the_oom_killers_last_pick(creds: CredStore, tmp_path: Path) -> None:
    """A real ``htsec credmon``: its worker (which may hold rotated refresh tokens not yet
    committed) scores below its supervisor (which holds nothing), also after a restart; -999
    where the process may lower its score (root with CAP_SYS_RESOURCE)."""
    probe = subprocess.run(
        ["sh", "-c", "echo -999 > /proc/self/oom_score_adj && cat /proc/self/oom_score_adj"],
        capture_output=True,
        text=True,
    )
    privileged = probe.stdout.strip() == "-999"
    with open(tmp_path / "credmon.log", "ab") as out:
        sup = subprocess.Popen(
            [HTSEC, "credmon", "--interval", "0.5"], stdout=out, stderr=out, env={**os.environ}
        )
    try:
        seen = []
        for _ in range(2):  # the first worker, and one the supervisor restarted after a kill
            wait_for("a worker", lambda: worker_of(sup.pid) not in (None, *seen), 60)
            worker = worker_of(sup.pid)
            assert worker is not None
            seen.append(worker)
            wait_for(
                "the worker's score settled",
                lambda: oom_score_adj(worker) < oom_score_adj(sup.pid),
                30,
            )
            if privileged:
                assert oom_score_adj(worker) == -999
            os.kill(worker, signal.SIGKILL)
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(30)
