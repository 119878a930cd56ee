"""The htsec command as a person uses it: help, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import run

COMMANDS = [
    [],
    ["config"],
    ["config", "show"],
    ["key"],
    ["key", "create"],
    ["key", "list"],
    ["key", "rotate"],
    ["token"],
    ["token", "create"],
    ["token", "list"],
    ["token", "verify"],
    ["token", "issued"],
    ["token", "revoke"],
    ["token", "revocations"],
    ["token", "request"],
    ["token", "request", "list"],
    ["token", "request", "approve"],
    ["token", "request", "deny"],
    ["token", "request", "auto-approve"],
    ["token", "request", "collect"],
    ["glidein"],
    ["glidein", "token"],
    ["glidein", "keygen"],
    ["glidein", "unwrap"],
    ["serve"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "htsec")
def test_help_everywhere(cmd: list[str]) -> None:
    r = run(*cmd, "--help")
    assert r.code == 0, r.err
    assert "Usage: htsec" in r.out and len(r.out.splitlines()) > 3


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
    tok = run("token", "create", "-i", "a@pool.example.org", "--lifetime", "0").out.strip()
    import time

    time.sleep(1.1)
    r = run("token", "verify", tok)
    assert r.code == 1
    assert "REJECTED (expired)" in r.err and "Traceback" not in r.err
    j = json.loads(run("token", "verify", tok, "--json").out)
    assert j == {"valid": False, "reason": "expired", "error": j["error"]}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["token", "create", "-i", "no-at-sign"], "user@domain"),
        (["token", "create", "-i", "a@b", "--authz", "SUPERUSER"], "unknown authorization"),
        (["token", "create", "-i", "a@b", "--key", "../etc"], "bad key name"),
        (["token", "create", "-i", "a@b", "--key", "missing"], "htsec key create missing"),
        (["token", "create", "-i", "a@b", "--lifetime", "-5"], "-5"),
        (["token", "revoke"], "exactly one"),
        (["token", "revoke", "--expr", "sub =?="], "not a valid ClassAd"),
        (["token", "verify", "/nonexistent/file"], "cannot read token file"),
        (["key", "create", "POOL"], "already exists"),
    ],
)
def test_bad_input_one_line_no_traceback(home: Path, args: list[str], needle: str) -> None:
    run("key", "create", "POOL")
    r = run(*args)
    assert r.code in (1, 2), (r.code, r.err)
    assert needle in r.err
    assert "Traceback" not in r.err + r.out


def test_verify_garbage_is_rejection_not_crash(home: Path) -> None:
    run("key", "create", "POOL")
    r = run("token", "verify", "a.b.c")
    assert r.code == 1 and "REJECTED" in r.err and "Traceback" not in r.err


def test_unsafe_key_mode_names_fix(home: Path) -> None:
    run("key", "create", "POOL")
    os.chmod(home / "passwords.d" / "POOL", 0o644)
    r = run("token", "create", "-i", "a@pool.example.org")
    assert r.code == 2
    assert "chmod 600" in r.err and str(home / "passwords.d" / "POOL") in r.err


def test_missing_condor_config(tmp_path: Path) -> None:
    r = run("config", "show", env={"CONDOR_CONFIG": str(tmp_path / "nope")})
    assert r.code == 2
    assert "CONDOR_CONFIG" in r.err and "nope" in r.err and "Traceback" not in r.err


def test_bad_trust_domain(home: Path) -> None:
    r = run("token", "create", "-i", "a@b", env={"_CONDOR_TRUST_DOMAIN": "two words"})
    assert r.code == 2 and "TRUST_DOMAIN" in r.err


def test_key_rotate_counts_and_kills(home: Path) -> None:
    run("key", "create", "POOL")
    toks = [run("token", "create", "-i", f"u{i}@pool.example.org").out.strip() for i in range(3)]
    run("token", "create", "-i", "gone@pool.example.org", "--lifetime", "0")
    import time

    time.sleep(1.1)  # the lifetime-0 token is valid through its exp second, then expired
    r = run("key", "rotate", "POOL", "--yes")
    assert r.code == 0, r.err
    assert "3 issued token(s)" in r.out  # the expired one is not counted
    assert all(run("token", "verify", t).code == 1 for t in toks)


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
    import time

    time.sleep(1.1)  # identity revocation covers tokens issued up to the revocation only
    later = run("token", "create", "-i", "b@pool.example.org").out.strip()
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


def test_config_show_overrides_and_config_d(tmp_path: Path) -> None:
    cfg = tmp_path / "condor_config"
    d = tmp_path / "config.d"
    d.mkdir()
    cfg.write_text(
        f"ROOT = {tmp_path}\nSEC_PASSWORD_DIRECTORY = $(ROOT)/pw\nLOCAL_CONFIG_DIR = {d}\n"
    )
    (d / "10-td").write_text("TRUST_DOMAIN = from.config.d\n")
    env: dict[str, str | None] = {"CONDOR_CONFIG": str(cfg), "_CONDOR_TRUST_DOMAIN": None}
    r = run("config", "show", "TRUST_DOMAIN", "SEC_PASSWORD_DIRECTORY", "--json", env=env)
    assert r.code == 0, r.err
    values = json.loads(r.out)["values"]
    assert values == {"TRUST_DOMAIN": "from.config.d", "SEC_PASSWORD_DIRECTORY": f"{tmp_path}/pw"}
    env["_CONDOR_TRUST_DOMAIN"] = "from.env"
    assert "TRUST_DOMAIN = from.env" in run("config", "show", "TRUST_DOMAIN", env=env).out


def test_builtin_home_created_private(home: Path) -> None:
    r = run("config", "show")
    assert r.code == 0
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert (home / "condor_config").is_file()
    assert "htsec built-in" in r.err


def test_unexpected_error_goes_to_log(home: Path) -> None:
    """A bug prints one line and leaves the traceback in the log, not on the terminal."""
    run("key", "create", "POOL")
    # An unreadable database path is a bug-shaped failure in the store layer.
    r = run("token", "issued", env={"_CONDOR_HTSEC_DATABASE_URL": "sqlite:////proc/nope/x.db"})
    assert r.code in (1, 70)
    assert "Traceback" not in r.err
