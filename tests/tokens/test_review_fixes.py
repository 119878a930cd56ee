"""Defects an independent review of the IDTOKENS code found, each with a test that fails on
the code before the fix: spoofed peers for auto-approval (X-Forwarded-For), terminal escapes
in requester-supplied text, approved requests that never expired, IPv4-mapped peers,
out-of-range and null claims, malleable signatures, unreadable key files, absurd lifetimes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from htsec.errors import UsageError
from htsec.tokens.authority import Authority
from htsec.tokens.idtoken import Verifier, b64url_decode, b64url_encode
from htsec.tokens.keys import Keyring
from htsec.tokens.requests import COLLECT_GRACE, Requests
from tests.conftest import run
from tests.tokens.test_verify import NOW, TD, claims, forge, keyring, reason, verifier

__all__ = ["keyring", "verifier"]  # fixtures shared with test_verify


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


@pytest.mark.parametrize(
    "over",
    [{"iat": 10**400}, {"exp": -(10**20)}, {"iat": -(10**20)}, {"exp": 2**63}],
    ids=["iat-huge", "exp-negative", "iat-negative", "exp-2^63"],
)
def test_out_of_range_times_are_rejected_not_crashes(
    verifier: Verifier, keyring: Keyring, over: dict[str, int]
) -> None:
    token = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims(**over))
    assert reason(verifier, token) == "bad_claims"
    aged = Verifier(keyring, trust_domain=TD, max_age=60)
    assert reason(aged, token) == "bad_claims"


def test_null_exp_is_not_no_expiry(verifier: Verifier, keyring: Keyring) -> None:
    payload = json.dumps({**claims(), "exp": None}).encode()
    token = forge(keyring, {"alg": "HS256", "kid": "POOL"}, payload)
    assert reason(verifier, token) == "bad_claims"


def test_one_spelling_per_signature(verifier: Verifier, keyring: Keyring) -> None:
    token = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims())
    assert verifier.verify(token, now=NOW).subject == "alice@pool.example.org"
    head, _, sig = token.rpartition(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    others = [c for c in alphabet if c != sig[-1]]
    same = [
        c for c in others if b64url_decode((sig[:-1] + c).encode()) == b64url_decode(sig.encode())
    ]
    assert len(same) == 3  # 43 characters carry 256 bits: 2 spare bits in the last one
    for c in same:
        assert reason(verifier, f"{head}.{sig[:-1]}{c}") == "malformed"
    assert b64url_encode(b64url_decode(sig.encode())) == sig


def test_unreadable_key_is_a_rejection(keyring: Keyring, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verifier running as another user meets a root-owned 0600 key (open() fails with
    EACCES after the mode checks pass): a clean rejection, not a traceback. Simulated with a
    failing open(): this machine's interpreter lives under /root, so a child process cannot
    drop to another user and still run it."""
    import htsec._fs

    token = forge(keyring, {"alg": "HS256", "kid": "site-a"}, claims(), key="site-a")
    pool = keyring.path_of("POOL")
    fresh = Verifier(Keyring(pool.parent, pool), trust_domain=TD)  # nothing cached yet

    def denied(*args: object, **kw: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(htsec._fs, "open", denied, raising=False)
    assert reason(fresh, token) == "key_unusable"


def test_lifetimes_are_bounded(authority: Authority) -> None:
    with pytest.raises(UsageError, match="10 years"):
        authority.mint(identity="alice@pool.example.org", lifetime=9_000_000_000_000_000_000)
    r = run("token", "create", "-i", "alice@pool.example.org", "--lifetime", "9000000000000000000")
    assert r.code == 2 and "10 years" in r.err and "Traceback" not in r.err
