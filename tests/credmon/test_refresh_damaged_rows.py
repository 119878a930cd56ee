"""The refresh engine and one damaged row: a sealed refresh token with a flipped byte, or one
sealed under a data key the key file no longer has, fails alone (recorded with its reason,
lease handed back, backed off); the other 63 credentials of its batch are refreshed in the same
pass. Against the real oidc-provider rig, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from htsec.credmon.engine import RefreshEngine
from htsec.credmon.policy import Policy
from htsec.credmon.providers import Provider, ProviderSet
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import Store
from tests.oidc import CLIENT_ID, CLIENT_SECRET, mint_refresh_tokens, provider_fixture
from tests.oidc import Provider as OidcProvider

oidc = provider_fixture()
BATCH = 64
POLICY = Policy(timeout=5.0, backoff_base=60.0, lease=30, batch=BATCH)


@pytest.fixture
def creds(store: Store, tmp_path: Path) -> CredStore:
    generate_key_file(tmp_path / "store.key")
    return CredStore(store, Sealer(tmp_path / "store.key"))


def providers(p: OidcProvider) -> ProviderSet:
    return ProviderSet(
        {
            "oidc": Provider(
                name="oidc",
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                token_url=p.token_url,
                rate=0,
            )
        },
        set(),
    )


def flip_a_byte(creds: CredStore, user: str) -> None:
    with creds.store.engine.begin() as conn:
        sealed = bytes(
            conn.execute(
                text('SELECT refresh_token FROM credentials WHERE "user" = :u'), {"u": user}
            ).scalar_one()
        )
        damaged = sealed[:-5] + bytes([sealed[-5] ^ 0x01]) + sealed[-4:]
        conn.execute(
            text('UPDATE credentials SET refresh_token = :v WHERE "user" = :u'),
            {"v": damaged, "u": user},
        )


def seal_under_a_lost_key(creds: CredStore, user: str, tmp_path: Path) -> None:
    """The row was sealed with a data key that is not in the key file (a replaced key file)."""
    generate_key_file(tmp_path / "other.key")
    other = CredStore(creds.store, Sealer(tmp_path / "other.key"))
    other.put(user, "oidc", refresh_token="sealed-under-a-key-we-no-longer-have")


@pytest.mark.parametrize("damage", ["flipped_byte", "missing_data_key"])
def test_one_damaged_row_fails_alone_and_its_batch_is_refreshed(
    creds: CredStore, oidc: OidcProvider, tmp_path: Path, damage: str
) -> None:
    tokens = mint_refresh_tokens(oidc, BATCH, prefix=f"{damage}-u")
    for i, rt in enumerate(tokens):
        creds.put(f"u{i:02d}", "oidc", refresh_token=rt)
    if damage == "flipped_byte":
        flip_a_byte(creds, "u17")
    else:
        seal_under_a_lost_key(creds, "u17", tmp_path)

    before = time.time()
    engine = RefreshEngine(creds, providers(oidc), holder="test", policy=POLICY)
    report = asyncio.run(engine.run_pass(max_claims=BATCH))

    assert sorted(report.refreshed) == sorted(f"u{i:02d}/oidc" for i in range(BATCH) if i != 17)
    assert list(report.failed) == ["u17/oidc"], report
    assert "cannot unseal" in report.failed["u17/oidc"]
    info = creds.info("u17", "oidc")
    assert info.last_error is not None and "cannot unseal" in info.last_error, info
    assert info.state == "active"  # a restored key file makes it work again
    with creds.store.engine.connect() as conn:
        lease, failures, next_at = conn.execute(
            text(
                "SELECT lease_token, failures, next_attempt_at FROM credentials "
                "WHERE \"user\" = 'u17'"
            )
        ).one()
    assert lease is None and failures == 1  # handed back, counted
    assert next_at is not None and next_at >= before + POLICY.backoff_base * 0.5 - 1
    # The next pass does not start with it: it waits for its back-off.
    again = asyncio.run(engine.run_pass())
    assert "u17/oidc" not in again.failed
