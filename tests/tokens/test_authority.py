"""The token authority mints within bounds: a lifetime beyond 10 years is a usage error, in
the library and on the command line (exit 2, no traceback)."""

from __future__ import annotations

import pytest

from htsec.errors import UsageError
from htsec.tokens.authority import Authority
from tests.conftest import run


def test_lifetimes_are_bounded(authority: Authority) -> None:
    with pytest.raises(UsageError, match="10 years"):
        authority.mint(identity="alice@pool.example.org", lifetime=9_000_000_000_000_000_000)
    r = run("token", "create", "-i", "alice@pool.example.org", "--lifetime", "9000000000000000000")
    assert r.code == 2 and "10 years" in r.err and "Traceback" not in r.err
