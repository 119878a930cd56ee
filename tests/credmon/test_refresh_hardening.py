"""The refresh engine against a scripted token endpoint (a real socket on 127.0.0.1 that
records each request and answers with exact bytes), for faults oidc-provider will not produce:
where a client secret may go, plain-http endpoints, hostile Retry-After and error values, a
database that fails while recording an outcome, and leases that would run out in flight."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from htsec.credmon.providers import Provider, ProviderSet
from htsec.credmon.refresh import Policy, RefreshEngine, RefreshReport
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import open_store
from tests.credmon.scripted import Seen, headers_of, replying, response, scripted

SECRET = "pool-wide-secret"
FAST = Policy(timeout=2.0, backoff_base=1.0, lease=30)


@pytest.fixture
def creds(tmp_path: Path) -> Iterator[CredStore]:
    store = open_store(f"sqlite:///{tmp_path / 'htsec.db'}")
    generate_key_file(tmp_path / "store.key")
    yield CredStore(store, Sealer(tmp_path / "store.key"))
    store.close()


def provider_set(token_url: str, **kw: object) -> ProviderSet:
    p = Provider(
        name="oidc", client_id="pool-client", client_secret=SECRET, token_url=token_url, rate=0
    )
    if kw:
        p = Provider(**{**p.__dict__, **kw})  # type: ignore[arg-type]
    return ProviderSet({"oidc": p}, set())


def refresh_pass(
    creds: CredStore, providers: ProviderSet, policy: Policy = FAST
) -> tuple[RefreshReport, RefreshEngine]:
    engine = RefreshEngine(creds, providers, holder="test", policy=policy)
    return asyncio.run(engine.run_pass()), engine


def serve_and_refresh(
    creds: CredStore, answer: bytes, providers_for: object = None
) -> tuple[RefreshReport, Seen]:
    async def main() -> tuple[RefreshReport, Seen]:
        async with scripted(replying(answer)) as (url, seen):
            providers = providers_for(url) if callable(providers_for) else provider_set(url)
            engine = RefreshEngine(creds, providers, holder="test", policy=FAST)
            return await engine.run_pass(), seen

    return asyncio.run(main())


def test_pool_secret_never_goes_to_a_token_url_from_meta(creds: CredStore) -> None:
    """A credential imported with its own .meta (token URL, client id) is refreshed with its
    own client credentials only: the pool's <PROVIDER>_CLIENT_SECRET_FILE stays home."""
    creds.put("alice", "oidc", refresh_token="rt-a", client_id="meta-client", token_url="X")

    async def main() -> Seen:
        async with scripted(replying(response())) as (url, seen):
            creds.put("alice", "oidc", refresh_token="rt-a", client_id="meta-client", token_url=url)
            creds.put("bob", "oidc", refresh_token="rt-b")
            report = await RefreshEngine(
                creds, provider_set(url + "?configured"), holder="t", policy=FAST
            ).run_pass()
            assert sorted(report.refreshed) == ["alice/oidc", "bob/oidc"], report
            return seen

    seen = asyncio.run(main())
    by_token = {b"rt-a" in r: r for r in seen.requests}
    alice, bob = by_token[True], by_token[False]
    pool_basic = base64.b64encode(f"pool-client:{SECRET}".encode())
    assert SECRET.encode() not in alice and pool_basic not in alice
    assert b"client_id=meta-client" in alice
    assert pool_basic in bob  # the configured URL gets the configured secret


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [("pool:client", "s3:cr+t %41/é"), ("plain-client", "a%3Ab"), ("client id", "+:%")],
)
def test_client_secret_basic_form_encodes_id_and_secret(
    creds: CredStore, client_id: str, secret: str
) -> None:
    """RFC 6749 section 2.3.1: the client id and secret are form-encoded before they are
    joined for Basic. The scripted endpoint decodes the header as an authorization server
    does (split at the first ':', then form-decode each half) and refuses a mismatch."""
    creds.put("ivy", "oidc", refresh_token="rt-i")

    async def answer(n: int, writer: asyncio.StreamWriter) -> bool:
        header = headers_of(seen.requests[-1]).get(b"authorization", b"")
        scheme, _, encoded = header.partition(b" ")
        user, _, password = base64.b64decode(encoded).decode("ascii").partition(":")
        ok = scheme == b"Basic" and (
            urllib.parse.unquote_plus(user),
            urllib.parse.unquote_plus(password),
        ) == (client_id, secret)
        refused = response(b'{"error":"invalid_client"}', status="401 Unauthorized")
        writer.write(response() if ok else refused)
        return True

    async def main() -> RefreshReport:
        nonlocal seen
        async with scripted(answer) as (url, seen):
            providers = provider_set(url, client_id=client_id, client_secret=secret)
            return await RefreshEngine(creds, providers, holder="t", policy=FAST).run_pass()

    seen = Seen()
    report = asyncio.run(main())
    assert report.refreshed == ["ivy/oidc"], report


def test_plain_http_to_another_host_is_refused(creds: CredStore) -> None:
    creds.put("carol", "oidc", refresh_token="rt-c")
    report, _ = refresh_pass(creds, provider_set("http://provider.example.org/token"))
    assert "insecure_token_url" in report.failed["carol/oidc"], report
    assert "https" in creds.info("carol", "oidc").last_error


@pytest.mark.parametrize(
    "retry_after", ["inf", "1e999", "-5", "nan", "Wed, 21 Oct 2015 07:28:00 GMT"]
)
def test_hostile_retry_after_gives_a_bounded_backoff(creds: CredStore, retry_after: str) -> None:
    creds.put("dave", "oidc", refresh_token="rt-d")
    answer = response(
        b'{"error":"temporarily_unavailable"}',
        status="503 Service Unavailable",
        extra=f"Retry-After: {retry_after}\r\n".encode(),
    )
    report, _ = serve_and_refresh(creds, answer)
    assert report.failed["dave/oidc"].startswith("http_503"), report
    with creds.store.engine.connect() as conn:
        (next_attempt,) = conn.execute(text("SELECT next_attempt_at FROM credentials")).one()
    assert time.time() < next_attempt <= time.time() + FAST.backoff_max * 1.5 + 1


def test_error_codes_from_the_provider_are_sanitised(creds: CredStore) -> None:
    creds.put("erin", "oidc", refresh_token="rt-e")
    hostile = b'{"error":"bad\\nFAKE LOG LINE: admin token=abc ' + b"x" * 5000 + b'"}'
    report, _ = serve_and_refresh(creds, response(hostile, status="400 Bad Request"))
    why = report.failed["erin/oidc"]
    assert "\n" not in why and "FAKE" not in why and len(why) < 300, why
    assert "malformed error code" in why


def test_a_failing_database_does_not_stop_the_pass(
    creds: CredStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Recording one failure raises (the database is locked): that credential is logged and
    left to its lease; the pass finishes and the other credentials are refreshed."""
    creds.put("fred", "oidc", refresh_token="rt-f")
    creds.put("gina", "oidc", refresh_token="rt-g")

    async def answer(n: int, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(status="500 Oops") if n == 1 else response())
        return True

    def locked(*args: object, **kw: object) -> bool:
        raise OperationalError("UPDATE credentials", {}, Exception("database is locked"))

    async def main() -> RefreshReport:
        async with scripted(answer) as (url, _):
            engine = RefreshEngine(
                creds, provider_set(url), holder="t", policy=Policy(concurrency=1, timeout=2)
            )
            monkeypatch.setattr(engine.leases, "fail", locked)
            return await engine.run_pass()

    report = asyncio.run(main())
    assert len(report.refreshed) == 1 and len(report.failed) == 1, report
    assert "bookkeeping failed" in next(iter(report.failed.values()))
    assert "could not record the outcome" in caplog.text


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
    from htsec.creds.leases import Leases

    creds.put("hank", "oidc", refresh_token="rt-h")
    start = int(time.time())
    (claim,) = Leases(creds, "t", set()).claim(now=start + 100, due_by=start, lease_s=30, limit=5)
    assert claim.lease_until == start + 130
