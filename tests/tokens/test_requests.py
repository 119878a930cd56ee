"""Token requests (HTCondor's request/approve flow) against a real ``htsec serve`` over HTTPS,
plus the rules of FORMATS.md section 7 checked on the store directly."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from htsec.config import Settings
from htsec.errors import Busy, Conflict, Forbidden, TooManyRequests, UsageError
from htsec.tokens.authority import Authority
from htsec.tokens.requests import COLLECT_GRACE, MAX_PENDING, Requests
from tests.conftest import run


@pytest.mark.slow
def test_request_approve_collect(server: dict[str, str], home: Path) -> None:
    r = run(
        "token",
        "request",
        "-i",
        "carol@pool.example.org",
        "--authz",
        "READ",
        "--no-wait",
        env=server,
    )
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    rid, secret = lines[0].split()[1], lines[-1]
    assert len(rid) == 7 and rid.isdigit()
    # Admin endpoints need an ADMINISTRATOR token.
    run("token", "create", "-i", "user@pool.example.org", "--authz", "READ", "--token", "user")
    denied = run("token", "request", "list", env=server)
    assert denied.code == 1 and "ADMINISTRATOR" in denied.err
    os.unlink(home / "tokens.d" / "user")
    run(
        "token",
        "create",
        "-i",
        "admin@pool.example.org",
        "--authz",
        "ADMINISTRATOR",
        "--token",
        "admin",
    )
    listed = json.loads(run("token", "request", "list", "--json", env=server).out)["requests"]
    assert [(x["id"], x["identity"], x["authz"], x["peer"]) for x in listed] == [
        (rid, "carol@pool.example.org", ["READ"], "127.0.0.1")
    ]
    assert run("token", "request", "approve", rid, "--yes", env=server).code == 0
    got = run("token", "request", "collect", rid, stdin=secret + "\n", env=server)
    assert got.code == 0, got.err
    v = json.loads(run("token", "verify", got.out.strip(), "--json").out)
    assert (v["identity"], v["authorizations"]) == ("carol@pool.example.org", ["READ"])
    again = run("token", "request", "collect", rid, stdin=secret + "\n", env=server)
    assert again.code == 1 and "collected" in again.err  # handed over once
    issued = json.loads(run("token", "issued", "--json").out)["issued"]
    assert any(x["minted_via"] == f"request {rid}" for x in issued)
    # No token or request secret reaches the server's log.
    log = (home.parent / "serve.log").read_text()
    assert "GET /v1/token-requests" in log
    for secret_text in (
        got.out.strip(),
        secret,
        *(p.read_text().strip() for p in (home / "tokens.d").iterdir()),
    ):
        assert secret_text not in log


@pytest.mark.slow
def test_wrong_secret_and_deny(server: dict[str, str], home: Path) -> None:
    run(
        "token",
        "create",
        "-i",
        "admin@pool.example.org",
        "--authz",
        "ADMINISTRATOR",
        "--token",
        "admin",
    )
    r = run("token", "request", "-i", "dave@pool.example.org", "--no-wait", env=server)
    rid = r.out.split()[1]
    bad = run("token", "request", "collect", rid, stdin="not-the-secret\n", env=server)
    assert bad.code == 1 and f"no token request {rid}" in bad.err
    assert run("token", "request", "deny", rid, env=server).code == 0
    again = run("token", "request", "approve", rid, "--yes", env=server)
    assert again.code == 1 and "denied" in again.err


@pytest.mark.slow
def test_auto_approval_waiting_client(server: dict[str, str], home: Path) -> None:
    run(
        "token",
        "create",
        "-i",
        "admin@pool.example.org",
        "--authz",
        "ADMINISTRATOR",
        "--token",
        "admin",
    )
    too_long = run(
        "token",
        "request",
        "auto-approve",
        "--netblock",
        "127.0.0.0/8",
        "--lifetime",
        "3601",
        env=server,
    )
    assert too_long.code == 1 and "TOKEN_REQUEST_AUTO_APPROVE_MAX_LIFETIME" in too_long.err
    assert (
        run(
            "token",
            "request",
            "auto-approve",
            "--netblock",
            "127.0.0.0/8",
            "--lifetime",
            "600",
            env=server,
        ).code
        == 0
    )
    r = run(
        "token",
        "request",
        "-i",
        "condor@pool.example.org",
        "--authz",
        "ADVERTISE_STARTD",
        "--authz",
        "ADVERTISE_MASTER",
        "--token",
        "startd",
        "--timeout",
        "20",
        env=server,
    )
    assert r.code == 0, r.err
    assert (home / "tokens.d" / "startd").is_file()
    # Not condor@..., or beyond ADVERTISE_*: stays pending for a human.
    for ident, authz in (
        ("alice@pool.example.org", "ADVERTISE_STARTD"),
        ("condor@pool.example.org", "WRITE"),
    ):
        p = run("token", "request", "-i", ident, "--authz", authz, "--no-wait", env=server)
        assert p.code == 0
    pending = json.loads(run("token", "request", "list", "--json", env=server).out)["requests"]
    assert sorted(x["identity"] for x in pending) == [
        "alice@pool.example.org",
        "condor@pool.example.org",
    ]


def test_problem_json_and_body_limit(server: dict[str, str], home: Path) -> None:
    url = server["_CONDOR_HTSEC_SERVER_URL"]
    ca = str(home / "tls" / "ca.pem")
    r = httpx.post(f"{url}/v1/token-requests", json={"identity": "x"}, verify=ca)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "identity" in r.json()["detail"]
    big = httpx.post(
        f"{url}/v1/token-requests",
        content=b"{" + b" " * 100_000 + b"}",
        verify=ca,
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 413
    noauth = httpx.get(f"{url}/v1/token-requests", verify=ca)
    assert noauth.status_code == 401 and noauth.json()["status"] == 401
    forged = httpx.get(
        f"{url}/v1/token-requests", verify=ca, headers={"Authorization": "Bearer a.b.c"}
    )
    assert forged.status_code == 401


# -- rules on the store directly ---------------------------------------------------------------
@pytest.fixture
def reqs(authority: Authority) -> Requests:
    return Requests(authority)


def test_ids_expiry_and_restart(reqs: Requests, settings: Settings, authority: Authority) -> None:
    view, _ = reqs.submit(
        identity="a@b",
        authz=["read"],
        lifetime=60,
        client_id="c",
        requester="c",
        peer="10.0.0.1",
        now=1000,
    )
    assert len(view.id) == 7 and view.expires_at == 1000 + settings.request_lifetime
    # A new server process (new objects, same store) still knows the request.
    again = Requests(Authority(settings))
    assert [v.id for v in again.pending(now=1001)] == [view.id]
    assert again.pending(now=1001 + settings.request_lifetime) == []
    with pytest.raises(Conflict, match="expired"):
        again.decide(view.id, approve=True, by="admin", now=1002 + settings.request_lifetime)


def test_lifetime_capped_by_issued_token_expiration(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    authority.settings = replace(authority.settings, issued_token_expiration=100)
    r = Requests(authority)
    view, _ = r.submit(
        identity="a@b", authz=[], lifetime=None, client_id="", requester="", peer="::1"
    )
    assert view.lifetime == 100


def test_request_limits(authority: Authority) -> None:
    r = Requests(authority, limits=["READ", "ADVERTISE_STARTD"])
    r.submit(identity="a@b", authz=["READ"], lifetime=None, client_id="", requester="", peer="p")
    with pytest.raises(Forbidden, match="SEC_TOKEN_REQUEST_LIMITS"):
        r.submit(
            identity="a@b", authz=["WRITE"], lifetime=None, client_id="", requester="", peer="p"
        )
    with pytest.raises(Forbidden, match="unrestricted"):
        r.submit(identity="a@b", authz=[], lifetime=None, client_id="", requester="", peer="p")


def _fill_pending(reqs: Requests, n: int = MAX_PENDING) -> None:
    from htsec.store.models import TokenRequest

    with reqs.store.session() as s:
        for i in range(n):
            s.add(
                TokenRequest(
                    id=f"9{i:06d}",
                    client_secret_hash="0" * 64,
                    client_id="",
                    requester="",
                    peer=f"198.51.{i // 256}.{i % 256}",
                    identity="a@b",
                    authz="",
                    lifetime=None,
                    state="pending",
                    created_at=int(time.time()),
                    expires_at=int(time.time()) + 3600,
                )
            )


def test_at_most_1000_pending(reqs: Requests) -> None:
    _fill_pending(reqs)
    with pytest.raises(Busy, match="1000 token requests"):
        reqs.submit(identity="a@b", authz=[], lifetime=None, client_id="", requester="", peer="p")


def _ask(reqs: Requests, peer: str, identity: str = "a@b", authz: list[str] | None = None) -> str:
    view, _ = reqs.submit(
        identity=identity, authz=authz or [], lifetime=None, client_id="", requester="", peer=peer
    )
    return view.state


def test_pending_capped_per_peer(authority: Authority) -> None:
    """One peer cannot fill the global cap: at most max_per_peer of its requests pend (429),
    an IPv6 peer counts by its /64, an IPv4-mapped one as IPv4; other peers still get in."""
    reqs = Requests(authority, max_per_peer=3)
    for _ in range(3):
        assert _ask(reqs, "192.0.2.1") == "pending"
    with pytest.raises(TooManyRequests, match=r"3 token requests from 192\.0\.2\.1") as exc:
        _ask(reqs, "::ffff:192.0.2.1")
    assert exc.value.status == 429
    assert _ask(reqs, "192.0.2.2") == "pending"
    for last in range(1, 4):
        _ask(reqs, f"2001:db8:0:1::{last}")
    with pytest.raises(TooManyRequests, match="2001:db8:0:1::/64"):
        _ask(reqs, "2001:db8:0:1:ffff::9")
    assert _ask(reqs, "2001:db8:0:2::1") == "pending"
    # Requests made in one second are listed in id order (random): pick one of this peer's.
    first = next(v for v in reqs.pending() if v.peer == "192.0.2.1")
    reqs.decide(first.id, approve=False, by="admin")
    assert _ask(reqs, "192.0.2.1") == "pending"  # a decided request frees its place


def test_default_cap_per_peer(reqs: Requests) -> None:
    from htsec.tokens.requests import MAX_PENDING_PER_PEER

    for _ in range(MAX_PENDING_PER_PEER):
        _ask(reqs, "203.0.113.5")
    with pytest.raises(TooManyRequests, match="already pending"):
        _ask(reqs, "203.0.113.5")


def test_auto_approved_requests_pass_a_full_queue(reqs: Requests) -> None:
    """With the global cap full, a request an auto-approval rule covers is approved (it never
    pends); anything else still gets 503."""
    reqs.add_rule("10.1.0.0/16", 600, by="admin")
    _fill_pending(reqs)
    assert _ask(reqs, "10.1.2.3", "condor@ep1.example.org", ["ADVERTISE_STARTD"]) == "approved"
    with pytest.raises(Busy, match="1000 token requests") as exc:
        _ask(reqs, "10.1.2.3", "condor@ep1.example.org", ["READ"])
    assert exc.value.status == 503
    with pytest.raises(Busy, match="1000 token requests"):
        _ask(reqs, "10.9.9.9", "condor@ep1.example.org", ["ADVERTISE_STARTD"])


def test_anonymous_flood_from_one_peer_gets_429(server: dict[str, str], home: Path) -> None:
    """Over HTTPS on a real server: the 51st pending request from 127.0.0.1 is refused with a
    problem document, not queued (50: MAX_PENDING_PER_PEER)."""
    url, ca = server["_CONDOR_HTSEC_SERVER_URL"], str(home / "tls" / "ca.pem")
    with httpx.Client(base_url=url, verify=ca) as client:
        body = {"identity": "condor@ep.pool.example.org", "authz": ["ADVERTISE_STARTD"]}
        for _ in range(50):
            assert client.post("/v1/token-requests", json=body).status_code == 201
        r = client.post("/v1/token-requests", json=body)
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "already pending" in r.json()["detail"]


def test_auto_rule_bounds(reqs: Requests) -> None:
    with pytest.raises(UsageError, match="CIDR"):
        reqs.add_rule("not-a-net", 60, by="x")
    with pytest.raises(UsageError, match="MAX_LIFETIME"):
        reqs.add_rule("10.0.0.0/8", 3601, by="x")
    reqs.add_rule("10.0.0.0/8", 60, by="x", now=1000)
    ok, _ = reqs.submit(
        identity="condor@b",
        authz=["ADVERTISE_SCHEDD"],
        lifetime=None,
        client_id="",
        requester="",
        peer="10.1.2.3",
        now=1030,
    )
    assert ok.state == "approved"
    outside, _ = reqs.submit(
        identity="condor@b",
        authz=["ADVERTISE_SCHEDD"],
        lifetime=None,
        client_id="",
        requester="",
        peer="192.0.2.1",
        now=1030,
    )
    late, _ = reqs.submit(
        identity="condor@b",
        authz=["ADVERTISE_SCHEDD"],
        lifetime=None,
        client_id="",
        requester="",
        peer="10.1.2.3",
        now=1061,
    )
    assert (outside.state, late.state) == ("pending", "pending")


def test_forwarded_for_does_not_choose_the_peer(server: dict[str, str], home: Path) -> None:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 unless told not to; auto-approval
    rules match on the peer address, so any local client could pick one."""
    run("token", "create", "-i", "admin@pool.example.org", "--authz", "ADMINISTRATOR",
        "--token", "admin")  # fmt: skip
    rule = run("token", "request", "auto-approve", "--netblock", "10.1.2.0/24",
               "--lifetime", "600", env=server)  # fmt: skip
    assert rule.code == 0, rule.err
    r = httpx.post(
        server["_CONDOR_HTSEC_SERVER_URL"] + "/v1/token-requests",
        json={"identity": "condor@pool.example.org", "authz": ["ADVERTISE_STARTD"]},
        headers={"X-Forwarded-For": "10.1.2.3", "Forwarded": "for=10.1.2.3"},
        verify=str(home / "tls" / "ca.pem"),
    )
    assert r.status_code == 201, r.text
    request = r.json()["request"]
    assert request["peer"] == "127.0.0.1" and request["state"] == "pending", request


def test_requester_text_cannot_drive_the_terminal(server: dict[str, str], home: Path) -> None:
    run("token", "create", "-i", "admin@pool.example.org", "--authz", "ADMINISTRATOR",
        "--token", "admin")  # fmt: skip
    url = server["_CONDOR_HTSEC_SERVER_URL"] + "/v1/token-requests"
    ca = str(home / "tls" / "ca.pem")
    body = {"identity": "admin@pool.example.org", "authz": ["ADMINISTRATOR"]}
    hostile = httpx.post(url, json={**body, "client_id": "\r\x1b[2KRequest ok"}, verify=ca)
    assert hostile.status_code == 400 and "control" in hostile.json()["detail"]
    markup = httpx.post(url, json={**body, "client_id": "[/nope] [bold]x"}, verify=ca)
    assert markup.status_code == 201
    listing = run("token", "request", "list", env=server)
    assert listing.code == 0, listing.err
    assert "[/nope] [bold]x" in listing.out


def test_approved_requests_expire_if_never_collected(authority: Authority) -> None:
    reqs = Requests(authority)
    t = 1_000_000
    view, secret = reqs.submit(
        identity="condor@pool.example.org",
        authz=["ADVERTISE_STARTD"],
        lifetime=None,
        client_id="",
        requester="",
        peer="p",
        now=t,
    )
    reqs.decide(view.id, approve=True, by="admin", now=t + 10)
    late = view.expires_at + COLLECT_GRACE + 1
    done, token = reqs.collect(view.id, secret, now=late)
    assert token is None and done.state == "expired"


def test_ipv4_mapped_peers_match_ipv4_rules(authority: Authority) -> None:
    reqs = Requests(authority)
    reqs.add_rule("10.9.0.0/16", 60, by="admin", now=1000)
    view, _ = reqs.submit(identity="condor@pool.example.org", authz=["ADVERTISE_STARTD"],
                          lifetime=None, client_id="", requester="", peer="::ffff:10.9.1.1",
                          now=1010)  # fmt: skip
    assert view.state == "approved"


def test_a_waiting_client_asks_every_poll_seconds(
    server: dict[str, str],
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """How often a waiting client asks is a parameter of the wait (no environment hook): at
    0.1 s it asks several times while an administrator approves, then prints the token."""
    import threading

    from htsec.cli.context import App
    from htsec.cli.request import _collect

    monkeypatch.setenv("_CONDOR_HTSEC_SERVER_URL", server["_CONDOR_HTSEC_SERVER_URL"])
    run("token", "create", "-i", "admin@pool.example.org", "--authz", "ADMINISTRATOR",
        "--token", "admin")  # fmt: skip
    r = run("token", "request", "-i", "carol@pool.example.org", "--no-wait", env=server)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    rid, secret = lines[0].split()[1], lines[-1]
    approval = threading.Timer(
        0.5, lambda: run("token", "request", "approve", rid, "--yes", env=server)
    )
    approval.start()
    app = App()
    client = app.client(None, None)
    try:
        _collect(app, client, rid, secret, 30, None, poll=0.1)
    finally:
        client.close()  # a kept-alive connection would hold up the server's shutdown
        approval.join()
    token = capsys.readouterr().out.strip()
    assert run("token", "verify", token).code == 0
    asked = (home.parent / "serve.log").read_text().count(f"GET /v1/token-requests/{rid}")
    assert asked >= 3, asked  # at the default 5 s it would have asked once or twice
