"""Which client credentials the refresh engine sends to which token endpoint (a scripted
endpoint, tests/credmon/scripted.py): a credential's own .meta client never gets the pool's
secret, and client_secret_basic form-encodes the id and secret (RFC 6749 section 2.3.1)."""

from __future__ import annotations

import asyncio
import base64
import urllib.parse

import pytest

from htsec.credmon.engine import RefreshEngine, RefreshReport
from htsec.creds.store import CredStore
from tests.credmon.scripted import (
    FAST,
    SECRET,
    Seen,
    headers_of,
    provider_set,
    replying,
    response,
    scripted,
)


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
