"""The credd API over HTTPS on a real ``htsec serve``: identity-based authorization,
problem+json errors, no refresh token ever returned, metrics published."""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import mint_at, run
from tests.creds.conftest import bearer, mint

RT = "refresh-SECRET-0123456789abcdef"
AT = "access-SECRET-fedcba9876543210"


def test_store_list_fetch_delete_own(api: httpx.Client, home: Path) -> None:
    alice = mint("alice@pool.example.org")
    r = api.put(
        "/v1/creds/box",
        headers=bearer(alice),
        json={"refresh_token": RT, "access_token": AT, "expires_in": 600, "scopes": ["read"]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["user"], body["name"], body["version"]) == ("alice", "box", 1)
    listed = api.get("/v1/creds", headers=bearer(alice)).json()["credentials"]
    assert [c["name"] for c in listed] == ["box"]
    use = api.get("/v1/creds/box/access-token", headers=bearer(alice)).json()
    assert use["access_token"] == AT and 590 <= use["expires_in"] <= 600
    everything = json.dumps(
        [listed, body, use, api.get("/v1/creds/box", headers=bearer(alice)).json()]
    )
    assert RT not in everything  # a refresh token is never returned
    assert api.delete("/v1/creds/box", headers=bearer(alice)).status_code == 204
    gone = api.get("/v1/creds/box", headers=bearer(alice))
    assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json"


def test_users_are_isolated(api: httpx.Client) -> None:
    alice, bob = mint("alice@pool.example.org"), mint("bob@pool.example.org")
    api.put("/v1/creds/box", headers=bearer(alice), json={"refresh_token": RT, "access_token": AT})
    assert api.get("/v1/creds", headers=bearer(bob)).json()["credentials"] == []
    assert api.get("/v1/creds", headers=bearer(bob), params={"user": "alice"}).status_code == 403
    assert (
        api.get(
            "/v1/creds/box/access-token", headers=bearer(bob), params={"user": "alice"}
        ).status_code
        == 403
    )
    assert (
        api.delete("/v1/creds/box", headers=bearer(bob), params={"user": "alice"}).status_code
        == 403
    )
    assert api.get("/v1/creds/box/access-token", headers=bearer(bob)).status_code == 404


def test_execution_point_fetches_access_tokens(api: httpx.Client) -> None:
    alice = mint("alice@pool.example.org")
    ep = mint("condor@ep1.pool.example.org", "DAEMON")
    api.put(
        "/v1/creds/box",
        params={"handle": "work"},
        headers=bearer(alice),
        json={"refresh_token": RT, "access_token": AT, "expires_in": 60},
    )
    r = api.get(
        "/v1/creds/box/access-token", headers=bearer(ep), params={"user": "alice", "handle": "work"}
    )
    assert r.status_code == 200 and r.json()["access_token"] == AT
    # DAEMON does not let it list, read metadata of or delete others' credentials.
    assert api.get("/v1/creds", headers=bearer(ep), params={"user": "alice"}).status_code == 403
    assert (
        api.delete(
            "/v1/creds/box", headers=bearer(ep), params={"user": "alice", "handle": "work"}
        ).status_code
        == 403
    )


@pytest.mark.slow
def test_scope_limits_and_admin(api: httpx.Client) -> None:
    reader = mint("carol@pool.example.org", "READ")
    r = api.put("/v1/creds/box", headers=bearer(reader), json={"refresh_token": RT})
    assert r.status_code == 403 and "WRITE" in r.json()["detail"]
    admin = mint("admin@pool.example.org", "ADMINISTRATOR")
    api.put(
        "/v1/creds/box", headers=bearer(mint("dave@pool.example.org")), json={"refresh_token": RT}
    )
    everyone = api.get("/v1/creds", headers=bearer(admin), params={"all_users": "true"}).json()
    assert [c["user"] for c in everyone["credentials"]] == ["dave"]
    st = api.get("/v1/creds-status", headers=bearer(admin)).json()
    assert st == {"services": {"box": {"active": 1}}}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("put", "/v1/creds/bad_service", {"json": {"refresh_token": "x"}}, 400),
        (
            "put",
            "/v1/creds/box",
            {"json": {"refresh_token": "x"}, "params": {"handle": "../x"}},
            400,
        ),
        (
            "put",
            "/v1/creds/box",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
        ),
        ("put", "/v1/creds/box", {"json": {"refresh_token": "x" * 20000}}, 422),
        ("put", "/v1/creds/box", {"json": {}}, 400),
        (
            "put",
            "/v1/creds/box",
            {"content": b"x" * 70000, "headers": {"content-type": "application/json"}},
            413,
        ),
    ],
)
def test_bad_input_is_problem_json_and_store_untouched(
    api: httpx.Client, method: str, path: str, kwargs: dict, status: int
) -> None:
    alice = mint("alice@pool.example.org")
    headers = {**bearer(alice), **kwargs.pop("headers", {})}
    r = getattr(api, method)(path, headers=headers, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["detail"]
    assert api.get("/v1/creds", headers=bearer(alice)).json()["credentials"] == []


def test_wrong_identity_tokens(api: httpx.Client, home: Path) -> None:
    assert api.get("/v1/creds").status_code == 401
    # A token that expired 10 s ago: minted with the clock set back, not waited for.
    expired = mint_at("a@pool.example.org", now=int(time.time()) - 10, lifetime=1)
    r = api.get("/v1/creds", headers=bearer(expired))
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    revoked = mint("mallory@pool.example.org")
    run("token", "revoke", "--identity", "mallory@pool.example.org")
    # The server re-reads revocations at most once a second (tests/web/test_verifier.py pins
    # that with an injected clock): refused within 1.2 s, asked again until then.
    deadline = time.monotonic() + 1.2
    while (status := api.get("/v1/creds", headers=bearer(revoked)).status_code) != 401:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_parallel_puts_lose_no_update(api: httpx.Client, home: Path) -> None:
    alice = mint("alice@pool.example.org")
    api.put("/v1/creds/box", headers=bearer(alice), json={"refresh_token": "v0"})

    def put(i: int) -> int:
        return api.put(
            "/v1/creds/box", headers=bearer(alice), json={"refresh_token": f"v{i}"}
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(put, range(1, 41)))
    assert codes == [200] * 40
    # Every write was applied in turn: 41 audited stores, and the version counts at least
    # those (the server's credmon may have recorded its own attempts too).
    assert api.get("/v1/creds/box", headers=bearer(alice)).json()["version"] >= 41
    from sqlalchemy import text

    from htsec.config import load
    from htsec.store import open_store

    store = open_store(load().database_url)
    try:
        with store.engine.connect() as conn:
            n = conn.execute(
                text(
                    "SELECT count(*) FROM audit_log WHERE action = 'store' "
                    "AND \"user\" = 'alice' AND service = 'box'"
                )
            ).scalar()
    finally:
        store.close()
    assert n == 41


def test_if_match(api: httpx.Client) -> None:
    alice = mint("alice@pool.example.org")
    api.put("/v1/creds/box", headers=bearer(alice), json={"refresh_token": "a"})
    stale = api.put(
        "/v1/creds/box", headers={**bearer(alice), "If-Match": "7"}, json={"refresh_token": "b"}
    )
    assert stale.status_code == 409
    assert (stale.json()["title"], stale.json()["code"]) == ("Conflict", "conflict")
    ok = api.put(
        "/v1/creds/box", headers={**bearer(alice), "If-Match": "1"}, json={"refresh_token": "b"}
    )
    assert ok.status_code == 200 and ok.json()["version"] == 2


def test_metrics(api: httpx.Client) -> None:
    alice = mint("alice@pool.example.org")
    api.put("/v1/creds/box", headers=bearer(alice), json={"refresh_token": RT, "access_token": AT})
    api.get("/v1/creds/box/access-token", headers=bearer(alice))
    text = api.get("/metrics").text
    assert 'htsec_credentials{service="box",state="active"} 1.0' in text
    assert "htsec_access_token_fetches_total 1.0" in text
    assert 'route="/v1/creds/{service}/access-token"' in text
    assert RT not in text and AT not in text


@pytest.mark.slow
def test_cli_cred_commands(server: dict[str, str], home: Path, tmp_path: Path) -> None:
    run("token", "create", "-i", "alice@pool.example.org", "--token", "alice")
    f = tmp_path / "rt"
    f.write_text(RT + "\n")
    f.chmod(0o600)
    r = run(
        "cred",
        "add",
        "--service",
        "box",
        "--handle",
        "work",
        "--refresh-token-file",
        str(f),
        "--scopes",
        "read,write",
        env=server,
    )
    assert r.code == 0 and "stored box_work for alice" in r.out, r.err
    r = run("cred", "add", "--service", "gdrive", "--from-stdin", stdin=RT, env=server)
    assert r.code == 0, r.err
    listed = json.loads(run("cred", "list", "--json", env=server).out)["credentials"]
    assert sorted(c["name"] for c in listed) == ["box_work", "gdrive"]
    table = run("cred", "list", env=server).out
    assert "box_work" in table and RT not in table
    st = json.loads(run("cred", "status", "--json", env=server).out)
    assert st == {"services": {"box": {"active": 1}, "gdrive": {"active": 1}}}
    assert run("cred", "delete", "--service", "gdrive", env=server).code == 0
    missing = run("cred", "delete", "--service", "gdrive", env=server)
    assert missing.code == 1 and "no credential gdrive" in missing.err
    both = run("cred", "add", "--service", "box", env=server)
    assert both.code == 2 and "exactly one" in both.err
    log = (home.parent / "serve.log").read_text()
    assert RT not in log


@pytest.mark.slow
def test_credd_serves_without_credmon(home: Path) -> None:
    from tests.conftest import serving

    with serving(home, {"_CONDOR_HTSEC_SERVE_CREDMON": "true"}, command="credd") as env:
        url = env["_CONDOR_HTSEC_SERVER_URL"]
        ca = str(home / "tls" / "ca.pem")
        assert httpx.get(f"{url}/v1/health", verify=ca).json()["status"] == "ok"
        assert "htsec_credmon_refreshes" not in httpx.get(f"{url}/metrics", verify=ca).text
    # ... while 'htsec serve' runs it (and exports its metrics) by default.
    with serving(home, {"_CONDOR_HTSEC_SERVE_CREDMON": "true"}) as env:
        url = env["_CONDOR_HTSEC_SERVER_URL"]
        ca = str(home / "tls" / "ca.pem")
        assert "htsec_credmon_refreshes" in httpx.get(f"{url}/metrics", verify=ca).text
