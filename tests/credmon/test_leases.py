"""Leases (htsec.credmon.leases): claims of credentials for refresh, and their outcomes
written only while the lease and the credential's version still match. On SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from htsec.credmon.leases import Leases
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import Store


@pytest.fixture
def creds(store: Store, tmp_path: Path) -> CredStore:
    generate_key_file(tmp_path / "store.key")
    return CredStore(store, Sealer(tmp_path / "store.key"))


def test_group_commit_fences_each_outcome(creds: CredStore) -> None:
    """A batch of refresh outcomes: the one whose credential changed meanwhile is refused."""
    for u in ("a", "b", "c"):
        creds.put(u, "box", refresh_token=f"{u}-rt")
    leases = Leases(creds, "host:1")
    claims = sorted(leases.claim(now=2_000_000_000, lease_s=60, limit=10), key=lambda c: c.user)
    assert [c.user for c in claims] == ["a", "b", "c"]
    creds.put("b", "box", refresh_token="b-newer")  # the user re-authorised during the refresh
    items = [
        (
            c,
            leases.success_values(
                c,
                access_token=f"{c.user}-at",
                refresh_token=f"{c.user}-rt2",
                expires_at=2_000_003_600,
                token_type="bearer",
                now=2_000_000_000,
                next_attempt_at=2_000_001_800,
            ),
        )
        for c in claims
    ]
    assert leases.commit_many(items) == [True, False, True]
    assert creds.refresh_token("a", "box") == "a-rt2"
    assert creds.refresh_token("b", "box") == "b-newer"  # the newer credential wins
    assert creds.refresh_token("c", "box") == "c-rt2"
