"""The refresh engine against a real OAuth server (npm oidc-provider, refresh-token rotation
with reuse detection on), on SQLite and PostgreSQL. Each anchor fault of condor_credmon_oauth
(FORMATS.md section 3) has a test that the anchor's behaviour would fail."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import httpx
import pytest

from htsec.credmon.engine import RefreshEngine
from htsec.credmon.leases import Claim
from htsec.credmon.policy import Policy
from htsec.credmon.providers import Provider, ProviderSet
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.errors import CredentialInactive
from htsec.store import Store
from tests.oidc import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    clear_faults,
    default_config,
    inject_fault,
    introspect,
    obtain_refresh_token,
    provider_fixture,
    revoke_grants,
)
from tests.oidc import Provider as OidcProvider

oidc = provider_fixture(
    default_config(ttl={"AccessToken": 30, "RefreshToken": 3600, "Grant": 3600})
)
oidc_norotate = provider_fixture(default_config(rotate_refresh_tokens=False))
FAST = Policy(timeout=2.0, backoff_base=1.0, lease=30)


def providers(p: OidcProvider) -> ProviderSet:
    return ProviderSet(
        {
            "oidc": Provider(
                name="oidc",
                client_id=CLIENT_ID,
                client_secret=CLIENT_SECRET,
                token_url=p.token_url,
                rate=200,
            )
        },
        set(),
    )


@pytest.fixture
def creds(store: Store, tmp_path: Path) -> CredStore:
    generate_key_file(tmp_path / "store.key")
    return CredStore(store, Sealer(tmp_path / "store.key"))


def add(creds: CredStore, p: OidcProvider, user: str) -> str:
    """A user authorises in the browser; the credd stores the refresh token (no access token)."""
    tokens = obtain_refresh_token(p, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, user, "openid")
    creds.put(user, "oidc", refresh_token=tokens["refresh_token"], scopes="openid", actor=user)
    return str(tokens["refresh_token"])


def engine(creds: CredStore, p: OidcProvider, **kw: object) -> RefreshEngine:
    return RefreshEngine(
        creds, providers(p), holder=str(kw.pop("holder", "test")), policy=FAST, **kw
    )  # type: ignore[arg-type]


def expire_now(creds: CredStore, store: Store) -> None:
    """Make every access token due (as if its lifetime had passed)."""
    from sqlalchemy import text

    with store.engine.begin() as conn:
        conn.execute(
            text("UPDATE credentials SET access_expires_at = :t, next_attempt_at = NULL"),
            {"t": int(time.time()) - 1},
        )


def test_refresh_rotates_and_keeps_newest(
    creds: CredStore, store: Store, oidc: OidcProvider
) -> None:
    first = add(creds, oidc, "alice")
    report = asyncio.run(engine(creds, oidc).run_pass())
    assert report.refreshed == ["alice/oidc"], report
    second = creds.refresh_token("alice", "oidc")
    assert second and second != first  # the provider rotated, the store has the new one
    tok = creds.access_token("alice", "oidc")
    assert introspect(oidc, (CLIENT_ID, CLIENT_SECRET), tok.access_token)["active"] is True
    # A second refresh must use the newest token: reusing the first would revoke the grant.
    expire_now(creds, store)
    assert asyncio.run(engine(creds, oidc).run_pass()).refreshed == ["alice/oidc"]
    assert creds.refresh_token("alice", "oidc") not in (first, second)
    assert creds.info("alice", "oidc").state == "active"


def test_not_due_is_left_alone(creds: CredStore, oidc: OidcProvider) -> None:
    add(creds, oidc, "alice")
    asyncio.run(engine(creds, oidc).run_pass())
    before = oidc.stats()["requests"].get("/token", 0)
    report = asyncio.run(engine(creds, oidc).run_pass())
    assert report.refreshed == [] and report.not_due == []  # not even claimed: next_attempt_at
    assert oidc.stats()["requests"].get("/token", 0) == before


def test_non_rotating_provider_keeps_old_refresh_token(
    creds: CredStore, store: Store, oidc_norotate: OidcProvider
) -> None:
    """The anchor retries forever when no new refresh token comes back; htsec keeps the old."""
    rt = add(creds, oidc_norotate, "bob")
    assert asyncio.run(engine(creds, oidc_norotate).run_pass()).refreshed == ["bob/oidc"]
    assert creds.refresh_token("bob", "oidc") == rt
    expire_now(creds, store)
    assert asyncio.run(engine(creds, oidc_norotate).run_pass()).refreshed == ["bob/oidc"]


def test_invalid_grant_marks_dead_and_jobs_get_nothing(
    creds: CredStore, oidc: OidcProvider
) -> None:
    add(creds, oidc, "carol")
    revoke_grants(oidc, "carol")
    report = asyncio.run(engine(creds, oidc).run_pass())
    assert list(report.dead) == ["carol/oidc"]
    info = creds.info("carol", "oidc")
    assert info.state == "needs_reauth" and "invalid_grant" in (info.last_error or "")
    with pytest.raises(CredentialInactive, match="needs_reauth"):
        creds.access_token("carol", "oidc")
    before = oidc.stats()["requests"].get("/token", 0)
    assert asyncio.run(engine(creds, oidc).run_pass()).dead == {}  # not retried forever
    assert oidc.stats()["requests"].get("/token", 0) == before
    assert creds.status()["oidc"] == {"needs_reauth": 1}


def test_one_failure_never_stops_the_others(creds: CredStore, oidc: OidcProvider) -> None:
    add(creds, oidc, "dave")
    creds.put("erin", "oidc", refresh_token="not-a-real-refresh-token")
    add(creds, oidc, "frank")
    report = asyncio.run(engine(creds, oidc).run_pass())
    assert sorted(report.refreshed) == ["dave/oidc", "frank/oidc"]
    assert list(report.dead) == ["erin/oidc"]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (500, "http_500"),
        (503, "http_503"),
        ("malformed", "bad_response"),
        ("drop", "unreachable"),
    ],
)
def test_provider_faults_back_off_then_recover(
    creds: CredStore, store: Store, oidc: OidcProvider, fault: object, reason: str
) -> None:
    rt = add(creds, oidc, "gina")
    inject_fault(oidc, fault, 1)  # type: ignore[arg-type]
    report = asyncio.run(engine(creds, oidc).run_pass())
    assert report.failed["gina/oidc"].startswith(reason), report
    info = creds.info("gina", "oidc")
    assert info.state == "active" and info.last_error and reason in info.last_error
    assert creds.refresh_token("gina", "oidc") == rt  # nothing lost
    # Backing off: not claimed again at once.
    assert asyncio.run(engine(creds, oidc).run_pass()).failed == {}
    clear_faults(oidc)
    expire_now(creds, store)
    assert asyncio.run(engine(creds, oidc).run_pass()).refreshed == ["gina/oidc"]


def test_slow_provider_times_out(creds: CredStore, oidc: OidcProvider) -> None:
    add(creds, oidc, "hank")
    inject_fault(oidc, "slow", 1, delay_ms=3000)
    report = asyncio.run(engine(creds, oidc).run_pass())
    assert report.failed["hank/oidc"].startswith("timeout")
    clear_faults(oidc)


def test_new_refresh_token_durable_before_publish(creds: CredStore, oidc: OidcProvider) -> None:
    """The anchor renames .use and .top separately; htsec commits both tokens first."""
    first = add(creds, oidc, "ivy")
    seen: list[str | None] = []

    def publish(claim: Claim, use: dict) -> None:
        assert "refresh_token" not in use
        seen.append(creds.refresh_token(claim.user, claim.service))

    asyncio.run(engine(creds, oidc, publish=publish).run_pass())
    assert seen and seen[0] not in (None, first)


def test_two_credmons_never_refresh_the_same_credential(
    creds: CredStore, store: Store, oidc: OidcProvider
) -> None:
    users = [f"user{i}" for i in range(12)]
    for u in users:
        add(creds, oidc, u)
    before = oidc.stats()["requests"].get("/token", 0)

    async def both() -> list:
        a, b = engine(creds, oidc, holder="host-a"), engine(creds, oidc, holder="host-b")
        return list(await asyncio.gather(a.run_pass(), b.run_pass()))

    ra, rb = asyncio.run(both())
    done = ra.refreshed + rb.refreshed
    assert sorted(done) == sorted(f"{u}/oidc" for u in users)  # each exactly once
    assert ra.dead == rb.dead == {}
    assert oidc.stats()["requests"].get("/token", 0) - before == len(users)


def test_access_token_works_at_a_relying_endpoint(creds: CredStore, oidc: OidcProvider) -> None:
    add(creds, oidc, "jack")
    asyncio.run(engine(creds, oidc).run_pass())
    tok = creds.access_token("jack", "oidc")
    r = httpx.get(
        oidc.metadata["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {tok.access_token}"},
        timeout=5,
    )
    assert r.status_code == 200 and r.json()["sub"] == "jack"


def test_response_without_expires_in(creds: CredStore, oidc: OidcProvider) -> None:
    """No expires_in: the JWT's exp, else the policy's default lifetime; never a crash."""
    add(creds, oidc, "kate")
    inject_fault(oidc, 200, 1, body={"access_token": "opaque-token", "token_type": "Bearer"})
    report = asyncio.run(engine(creds, oidc).run_pass())
    assert report.refreshed == ["kate/oidc"], report
    info = creds.info("kate", "oidc")
    assert info.access_expires_at is not None
    assert abs(info.access_expires_at - (time.time() + FAST.default_lifetime)) < 5
    clear_faults(oidc)


def test_provider_clock_skew_and_zero_lifetimes(creds: CredStore, oidc: OidcProvider) -> None:
    """The provider's clock is two hours behind: its JWT's exp is already past here. The
    token's lifetime (exp - iat) counts from now, and the next pass leaves it alone. A token
    response with expires_in 0 does not make every pass refresh again (min_rest)."""
    add(creds, oidc, "lena")
    add(creds, oidc, "mike")
    now = int(time.time())

    def part(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    skewed = f"{part({'alg': 'ES256'})}.{part({'iat': now - 7200, 'exp': now - 6000})}.c2ln"
    inject_fault(oidc, 200, 1, body={"access_token": skewed, "token_type": "Bearer"})
    inject_fault(oidc, 200, 1, body={"access_token": "short", "expires_in": 0})
    first = asyncio.run(engine(creds, oidc).run_pass())
    assert sorted(first.refreshed) == ["lena/oidc", "mike/oidc"], first
    expiries = sorted(
        (creds.info(u, "oidc").access_expires_at or 0) - now for u in ("lena", "mike")
    )
    assert expiries[0] <= 1 and 1195 <= expiries[1] <= 1205, expiries
    again = asyncio.run(engine(creds, oidc).run_pass())
    assert again.refreshed == [] and again.failed == {}, again
    clear_faults(oidc)


def test_oidc_discovery(oidc: OidcProvider, monkeypatch: pytest.MonkeyPatch) -> None:
    from htsec.config import load
    from htsec.credmon.providers import load_providers

    monkeypatch.setenv("_CONDOR_OIDC_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("_CONDOR_OIDC_ISSUER", oidc.issuer)
    load()
    p = load_providers().get("oidc")
    assert p is not None and p.token_url == oidc.token_url
    assert p.authorization_url == oidc.authorization_url
    assert "secure" in repr(p)


def test_rate_knob_limits_providers_known_only_from_meta(
    creds: CredStore, oidc: OidcProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTSEC_CREDMON_RATE also holds for credentials whose token URL and client come from their
    .meta (the provider is not configured here): at 1 refresh per second, 4 take 3 s or more."""
    from htsec.config import load
    from htsec.credmon.providers import load_providers

    monkeypatch.setenv("_CONDOR_HTSEC_CREDMON_RATE", "1")
    load()
    for i in range(4):
        tokens = obtain_refresh_token(
            oidc, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, f"m{i}", "openid"
        )
        creds.put(
            f"m{i}",
            "oidc",
            refresh_token=tokens["refresh_token"],
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            token_url=oidc.token_url,
        )
    known = load_providers()
    assert known.get("oidc") is None
    t0 = time.monotonic()
    report = asyncio.run(RefreshEngine(creds, known, holder="t", policy=FAST).run_pass())
    assert len(report.refreshed) == 4, report
    assert time.monotonic() - t0 >= 2.5
