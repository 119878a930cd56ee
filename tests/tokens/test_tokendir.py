"""Tokens given on the command line (htsec.tokens.tokendir): a text that is no file is a token
and verification says why it is malformed; ``--token-file`` takes only files, never a token
(it would be visible in ``ps``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from htsec.errors import UsageError
from htsec.tokens import tokendir
from tests.conftest import run


@pytest.fixture
def pool_key() -> None:
    assert run("key", "create", "POOL").code == 0


@pytest.mark.parametrize("text", ["A.B", "A", "A.B.C.D", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_verify_malformed_token_text(pool_key: None, text: str) -> None:
    r = run("token", "verify", text)
    assert r.code == 1, (r.out, r.err)
    assert "REJECTED (malformed)" in r.err and "cannot read token file" not in r.err


def test_verify_missing_path_is_a_file_error(pool_key: None, tmp_path: Path) -> None:
    r = run("token", "verify", str(tmp_path / "absent"))
    assert r.code == 2 and "cannot read token file" in r.err


def test_verify_token_from_file_and_text(pool_key: None, tmp_path: Path) -> None:
    token = run("token", "create", "-i", "alice@pool.example.org").out.strip()
    f = tmp_path / "tok"
    f.write_text(f"# comment\n{token}\n")
    assert run("token", "verify", str(f)).code == 0
    assert run("token", "verify", token).code == 0
    assert tokendir.read_token_arg(token) == token and tokendir.read_token_arg(str(f)) == token


def test_token_file_refuses_a_token(pool_key: None) -> None:
    token = run("token", "create", "-i", "admin@pool.example.org", "--authz", "ADMINISTRATOR").out
    r = run("token", "request", "list", "--token-file", token.strip())
    assert r.code == 2, (r.out, r.err)
    assert "--token-file takes a file, not a token" in r.err and "ps" in r.err
    with pytest.raises(UsageError, match="not a token"):
        tokendir.read_token_file(token.strip())


def test_token_file_reads_files(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("a.b.c\n")
    assert tokendir.read_token_file(str(f)) == "a.b.c"
    with pytest.raises(UsageError, match="does not exist"):
        tokendir.read_token_file("no-such-file")
