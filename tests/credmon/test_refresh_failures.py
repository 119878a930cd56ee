"""How a refresh fails, against a scripted token endpoint (tests/credmon/scripted.py) for
faults oidc-provider will not produce: plain-http endpoints refused, hostile Retry-After and
error values bounded and sanitised, a database failing while an outcome is recorded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from htsec.credmon.engine import RefreshEngine, RefreshReport
from htsec.credmon.policy import Policy
from htsec.creds.crypto import Sealer, generate_key_file
from htsec.creds.store import CredStore
from htsec.store import Store
from tests.credmon.scripted import (
    FAST,
    provider_set,
    refresh_pass,
    response,
    scripted,
    serve_and_refresh,
)


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


@pytest.mark.parametrize("token_type", ["Bearer\\u0000", "a\\u001bb", "\\u00a0"])
def test_a_hostile_token_type_costs_no_refresh(
    store: Store, tmp_path: Path, token_type: str
) -> None:
    """A provider's ``token_type`` is stored as text: one with a NUL made PostgreSQL refuse the
    group commit of every outcome batched with it (rotated refresh tokens of other
    credentials lost). Anything but an RFC 6749 type-name or URI is stored as ``bearer``."""
    generate_key_file(tmp_path / "store.key")
    creds = CredStore(store, Sealer(tmp_path / "store.key"))
    for user in ("erin", "fred"):
        creds.put(user, "oidc", refresh_token=f"rt-{user}")
    body = '{"access_token":"at","token_type":"%s","expires_in":600,"refresh_token":"rt-new"}'
    report, _ = serve_and_refresh(creds, response((body % token_type).encode()))
    assert not report.failed, report
    for user in ("erin", "fred"):
        info = creds.info(user, "oidc")
        assert info.token_type == "bearer" and info.state == "active"
