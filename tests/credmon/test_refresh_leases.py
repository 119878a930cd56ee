"""The refresh engine's leases: they run from when they are taken, and a request is not sent
on a lease about to run out (a scripted token endpoint, tests/credmon/scripted.py)."""

from __future__ import annotations

import asyncio
import time

from htsec.credmon.engine import RefreshEngine, RefreshReport
from htsec.credmon.policy import Policy
from htsec.creds.store import CredStore
from tests.credmon.scripted import Seen, provider_set, replying, response, scripted


def test_a_request_is_not_sent_on_a_lease_about_to_run_out(creds: CredStore) -> None:
    """A provider rate-limited to 2/s and leases of 4 s: credentials still waiting for the
    limiter when less than the safety margin of their lease is left are handed back untried
    (another credmon may take them once the lease is over) and refreshed by the next pass."""
    users = [f"u{i}" for i in range(8)]
    for u in users:
        creds.put(u, "oidc", refresh_token=f"rt-{u}")
    policy = Policy(timeout=1.0, lease=4, concurrency=8, batch=8)

    async def main() -> tuple[RefreshReport, RefreshReport, Seen]:
        async with scripted(replying(response())) as (url, seen):
            providers = provider_set(url, rate=2.0)
            first = await RefreshEngine(creds, providers, holder="t", policy=policy).run_pass()
            second = await RefreshEngine(creds, providers, holder="t", policy=policy).run_pass()
            return first, second, seen

    first, second, seen = asyncio.run(main())
    assert first.deferred and first.refreshed, first
    assert sorted(first.deferred + first.refreshed) == sorted(f"{u}/oidc" for u in users)
    assert sorted(second.refreshed) == sorted(first.deferred), second
    assert len(seen.requests) == len(users)  # each refresh token was sent exactly once


def test_leases_run_from_when_they_are_taken(creds: CredStore) -> None:
    from htsec.credmon.leases import Leases

    creds.put("hank", "oidc", refresh_token="rt-h")
    start = int(time.time())
    (claim,) = Leases(creds, "t", set()).claim(now=start + 100, due_by=start, lease_s=30, limit=5)
    assert claim.lease_until == start + 130
