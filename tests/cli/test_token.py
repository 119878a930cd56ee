"""``htsec token``: minting, token files, listing, verifying and revoking, as HTCondor does."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from tests.conftest import mint_at, run


def test_first_token_flow(home: Path) -> None:
    assert run("key", "create", "POOL").code == 0
    r = run(
        "token",
        "create",
        "--identity",
        "alice@pool.example.org",
        "--authz",
        "read",
        "--authz",
        "WRITE",
        "--lifetime",
        "3600",
    )
    assert r.code == 0, r.err
    token = r.out.strip()
    v = run("token", "verify", token, "--json")
    assert v.code == 0, v.err
    info = json.loads(v.out)
    assert info["identity"] == "alice@pool.example.org"
    assert info["authorizations"] == ["READ", "WRITE"]
    assert info["key"] == "POOL" and info["issuer"] == "pool.example.org"
    assert info["expires"] == info["issued"] + 3600


def test_token_file_written_0600_in_token_dir(home: Path) -> None:
    run("key", "create", "POOL")
    r = run("token", "create", "-i", "bob@pool.example.org", "--token", "bob")
    assert r.code == 0, r.err
    path = home / "tokens.d" / "bob"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_text()
    assert content.endswith("\n") and content.count("\n") == 1
    listed = json.loads(run("token", "list", "--json").out)
    assert [t["payload"]["sub"] for t in listed["tokens"]] == ["bob@pool.example.org"]
    plain = run("token", "list").out
    assert (
        plain.startswith('Header: {"alg":"HS256","kid":"POOL"} Payload: {')
        and f"File: {path}" in plain
    )
    assert run("token", "verify", str(path)).code == 0


def test_token_list_skips_unsafe_files_like_htcondor(home: Path) -> None:
    run("key", "create", "POOL")
    run("token", "create", "-i", "a@pool.example.org", "--token", "a")
    run("token", "create", "-i", "b@pool.example.org", "--token", "b.sh")  # excluded by regexp
    os.chmod(home / "tokens.d" / "a", 0o644)
    r = run("token", "list", "--json")
    listed = json.loads(r.out)
    assert listed["tokens"] == []
    reasons = {Path(s["file"]).name: s["reason"] for s in listed["skipped"]}
    assert "others" in reasons["a"] and "EXCLUDE" in reasons["b.sh"]


def test_rejected_token_exit_1_with_reason(home: Path) -> None:
    run("key", "create", "POOL")
    # Expired 10 s ago: minted with the clock set back, not waited for.
    tok = mint_at("a@pool.example.org", now=int(time.time()) - 10, lifetime=1)
    r = run("token", "verify", tok)
    assert r.code == 1
    assert "REJECTED (expired)" in r.err and "Traceback" not in r.err
    j = json.loads(run("token", "verify", tok, "--json").out)
    assert j == {"valid": False, "reason": "expired", "error": j["error"]}


def test_verify_garbage_is_rejection_not_crash(home: Path) -> None:
    run("key", "create", "POOL")
    r = run("token", "verify", "a.b.c")
    assert r.code == 1 and "REJECTED" in r.err and "Traceback" not in r.err


def test_revoke_jti_identity_expr_and_condor_expr(home: Path) -> None:
    run("key", "create", "POOL")
    a = run("token", "create", "-i", "a@pool.example.org").out.strip()
    b = run("token", "create", "-i", "b@pool.example.org").out.strip()
    c = run("token", "create", "-i", "c@pool.example.org", "--authz", "WRITE").out.strip()
    jti_a = json.loads(run("token", "verify", a, "--json").out)["jti"]
    assert "1 recorded live" in run("token", "revoke", "--jti", jti_a).out
    assert run("token", "revoke", "--identity", "b@pool.example.org").code == 0
    assert run("token", "revoke", "--expr", 'regexp("WRITE", scope) =?= true').code == 0
    for t in (a, b, c):
        r = run("token", "verify", t, "--json")
        assert r.code == 1 and json.loads(r.out)["reason"] == "revoked"
    # Identity revocation covers tokens issued up to the revocation only: one issued 2 s
    # after it (its clock set on, not waited for; within the 60 s iat skew) is valid.
    later = mint_at("b@pool.example.org", now=int(time.time()) + 2)
    assert run("token", "verify", later).code == 0
    issued = json.loads(run("token", "issued", "--json").out)["issued"]
    assert sorted(x["state"] for x in issued) == ["live", "revoked", "revoked", "revoked"]
    expr = run("token", "revocations", "--condor-expr").out.strip()
    # The exported expression, given to SEC_TOKEN_REVOCATION_EXPR, revokes the same tokens.
    r = run("token", "verify", later, env={"_CONDOR_SEC_TOKEN_REVOCATION_EXPR": expr})
    assert r.code == 0
    home2 = home.parent / "home2"
    env = {"HTSEC_HOME": str(home2), "_CONDOR_SEC_TOKEN_REVOCATION_EXPR": expr}
    run("key", "create", "POOL", "--secret-stdin", stdin="x")
    run("key", "create", "POOL", "--secret-stdin", stdin="x", env=env)
    assert run("token", "verify", c, env=env).code == 1  # other store, HTCondor-style expr only


def test_condor_revocation_expr_semantics(home: Path) -> None:
    """UNDEFINED or an error means revoked, as in HTCondor; =?= avoids that."""
    run("key", "create", "POOL")
    tok = run("token", "create", "-i", "a@pool.example.org").out.strip()
    r = run("token", "verify", tok, env={"_CONDOR_SEC_TOKEN_REVOCATION_EXPR": "exp < 5"})
    assert r.code == 1 and "SEC_TOKEN_REVOCATION_EXPR" in r.err
    r = run("token", "verify", tok, env={"_CONDOR_SEC_TOKEN_REVOCATION_EXPR": "exp =?= 5"})
    assert r.code == 0
