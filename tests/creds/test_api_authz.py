"""The credd and token API on a real ``htsec serve``: authorizations imply others as in HTCondor
(htsec.authz), and credentials belong to ``user@$(UID_DOMAIN)``: identities of other domains and
glidein pilots reach no user's credentials without ADMINISTRATOR or DAEMON. In process, on both
the fast path and the route: reading one's own access token needs READ or a level implying it."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from htsec.tokens.authority import Authority
from tests.conftest import REPO, run, serving
from tests.creds.conftest import AT as STORED_AT
from tests.creds.conftest import bearer, mint

RT = "refresh-SECRET-0123456789abcdef"
AT = "access-SECRET-fedcba9876543210"


@pytest.mark.slow
def test_readme_first_steps_let_an_administrator_store_credentials(
    server: dict[str, str], home: Path, tmp_path: Path
) -> None:
    """The README's first steps, its token line run as written: an ADMINISTRATOR token stores
    and lists its own credentials (ADMINISTRATOR implies WRITE and READ)."""
    lines = iter((REPO / "README.md").read_text().splitlines())
    line = next(x for x in lines if x.startswith("    .venv/bin/htsec token create "))
    while line.endswith("\\"):
        line = line[:-1] + next(lines)
    done = subprocess.run(
        ["bash", "-c", line], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rt = tmp_path / "rt.txt"
    rt.write_text(RT + "\n")
    rt.chmod(0o600)
    r = run("cred", "add", "--service", "box", "--refresh-token-file", str(rt), env=server)
    assert r.code == 0 and "stored box for admin" in r.out, r.err
    listed = json.loads(run("cred", "list", "--json", env=server).out)["credentials"]
    assert [(c["user"], c["name"]) for c in listed] == [("admin", "box")]
    verify = run("token", "verify", str(home / "tokens.d" / "admin"))
    assert "grants:  ALLOW, READ, WRITE, ADMINISTRATOR" in verify.out, verify.out


@pytest.mark.slow
def test_levels_imply_others_on_every_route(api: httpx.Client) -> None:
    """WRITE implies READ, ADMINISTRATOR and DAEMON imply WRITE, ADVERTISE_* imply READ; a
    level that implies neither (NEGOTIATOR writes nothing, ALLOW reads nothing) is refused."""
    writer = mint("alice@pool.example.org", "WRITE")
    put = api.put(
        "/v1/creds/box", headers=bearer(writer), json={"refresh_token": RT, "access_token": AT}
    )
    assert put.status_code == 200, put.text
    assert api.get("/v1/creds", headers=bearer(writer)).json()["credentials"][0]["name"] == "box"
    assert api.get("/v1/creds/box", headers=bearer(writer)).status_code == 200
    fetched = api.get("/v1/creds/box/access-token", headers=bearer(writer))
    assert fetched.json()["access_token"] == AT, fetched.text
    assert api.get("/v1/creds-status", headers=bearer(writer)).json() == {
        "services": {"box": {"active": 1}}
    }
    startd = mint("alice@pool.example.org", "ADVERTISE_STARTD")
    assert api.get("/v1/creds/box", headers=bearer(startd)).status_code == 200
    negotiator = mint("alice@pool.example.org", "NEGOTIATOR")
    refused = api.put("/v1/creds/gdrive", headers=bearer(negotiator), json={"refresh_token": RT})
    assert refused.status_code == 403 and "WRITE" in refused.json()["detail"]
    allow = mint("alice@pool.example.org", "ALLOW")
    assert api.get("/v1/creds/box/access-token", headers=bearer(allow)).status_code == 403
    daemon = mint("condor@pool.example.org", "DAEMON")
    assert (
        api.put("/v1/creds/box", headers=bearer(daemon), json={"refresh_token": RT}).status_code
        == 200
    )
    admin = mint("admin@pool.example.org", "ADMINISTRATOR")
    assert (
        api.put("/v1/creds/box", headers=bearer(admin), json={"refresh_token": RT}).status_code
        == 200
    )
    assert api.get("/v1/token-requests", headers=bearer(admin)).status_code == 200
    who = api.get("/v1/whoami", headers=bearer(admin)).json()
    assert who["grants"] == ["ALLOW", "READ", "WRITE", "ADMINISTRATOR"]
    # Unlimited tokens are users' tokens: READ and WRITE, never ADMINISTRATOR.
    unlimited = mint("admin@pool.example.org")
    assert api.get("/v1/token-requests", headers=bearer(unlimited)).status_code == 403


@pytest.mark.slow
def test_other_domains_reach_no_users_credentials(api: httpx.Client) -> None:
    """alice@other.domain is not alice@$(UID_DOMAIN): it reads, lists and fetches nothing of
    alice's, nor anything as "its own"; ADMINISTRATOR and DAEMON of other domains reach users'
    credentials by naming the user."""
    alice = mint("alice@pool.example.org")
    put = api.put(
        "/v1/creds/box", headers=bearer(alice), json={"refresh_token": RT, "access_token": AT}
    )
    assert put.status_code == 200, put.text
    assert api.get("/v1/creds/box/access-token", headers=bearer(alice)).status_code == 200
    for other in (mint("alice@other.domain"), mint("alice@pool.example.org.evil", "READ")):
        paths = ("/v1/creds", "/v1/creds/box", "/v1/creds/box/access-token", "/v1/creds-status")
        for path in paths:
            r = api.get(path, headers=bearer(other))
            assert r.status_code == 403, (path, r.text)
            assert "owns no credentials" in r.json()["detail"] and AT not in r.text
        r = api.put("/v1/creds/box", headers=bearer(other), json={"refresh_token": "mine"})
        assert r.status_code == 403
        assert api.delete("/v1/creds/box", headers=bearer(other)).status_code == 403
    assert api.get("/v1/creds/box/access-token", headers=bearer(alice)).status_code == 200
    ep = mint("condor@ep1.other.domain", "DAEMON")
    r = api.get("/v1/creds/box/access-token", headers=bearer(ep), params={"user": "alice"})
    assert r.status_code == 200 and r.json()["access_token"] == AT
    admin = mint("root@other.domain", "ADMINISTRATOR")
    r = api.get("/v1/creds", headers=bearer(admin), params={"user": "alice"})
    assert [c["name"] for c in r.json()["credentials"]] == ["box"]


@pytest.mark.slow
def test_glidein_pilot_of_site_alice_reaches_none_of_alices_credentials(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's UID_DOMAIN is this host (HTCondor's default, the full host name), where the
    frontend mints pilot tokens too: the pilot of site alice is not user alice."""
    domain = socket.getfqdn()
    monkeypatch.setenv("_CONDOR_UID_DOMAIN", domain)
    factory = tmp_path / "factory.key"
    recipient = run("glidein", "keygen", "--output", str(factory)).out.strip()
    envelope = tmp_path / "alice.idtoken.age"
    with serving(home) as env:
        r = run(
            "glidein", "token", "--site", "alice", "--recipient", recipient, "-o", str(envelope)
        )
        assert r.code == 0, r.err
        pilot = run("glidein", "unwrap", "-i", str(factory), str(envelope)).out.strip()
        alice = mint(f"alice@{domain}")
        url, ca = env["_CONDOR_HTSEC_SERVER_URL"], str(home / "tls" / "ca.pem")
        with httpx.Client(base_url=url, verify=ca) as api:
            put = api.put(
                "/v1/creds/box",
                headers=bearer(alice),
                json={"refresh_token": RT, "access_token": AT},
            )
            assert put.status_code == 200, put.text
            for path, params in (
                ("/v1/creds", {}),
                ("/v1/creds", {"user": "alice"}),
                ("/v1/creds/box", {}),
                ("/v1/creds/box/access-token", {}),
                ("/v1/creds/box/access-token", {"user": "alice"}),
            ):
                r = api.get(path, headers=bearer(pilot), params=params)
                assert r.status_code == 403, (path, params, r.text)
                assert AT not in r.text
            own = api.get("/v1/creds/box/access-token", headers=bearer(alice))
            assert own.json()["access_token"] == AT


@pytest.mark.parametrize("path", ["fast", "route"])
def test_own_fetch_needs_read(
    both: dict[str, TestClient], authority: Authority, alice: dict[str, str], path: str
) -> None:
    """A token whose scope grants no READ (ALLOW only; OWNER, no level since HTCondor 9.0)
    cannot read the secret. READ can, and so can every level that implies READ (WRITE,
    ADVERTISE_STARTD: htsec.authz, HTCondor's permission hierarchy), and an unlimited token."""
    client = both[path]
    cases = (
        (["ALLOW"], 403),
        (["OWNER"], 403),
        (["READ"], 200),
        (["WRITE"], 200),
        (["ADVERTISE_STARTD"], 200),
    )
    for authz, expected in cases:
        h = bearer(authority.mint(identity="alice@pool.example.org", authz=authz))
        r = client.get("/v1/creds/box/access-token", headers=h)
        assert r.status_code == expected, (authz, r.text)
        assert (STORED_AT in r.text) == (expected == 200)
    own = client.get("/v1/creds/box/access-token", headers=alice)
    assert own.json()["access_token"] == STORED_AT
