"""``htsec key``: signing keys (unsafe modes named with their fix, rotation)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.conftest import mint_at, run


def test_unsafe_key_mode_names_fix(home: Path) -> None:
    run("key", "create", "POOL")
    os.chmod(home / "passwords.d" / "POOL", 0o644)
    r = run("token", "create", "-i", "a@pool.example.org")
    assert r.code == 2
    assert "chmod 600" in r.err and str(home / "passwords.d" / "POOL") in r.err


def test_key_rotate_counts_and_kills(home: Path) -> None:
    run("key", "create", "POOL")
    toks = [run("token", "create", "-i", f"u{i}@pool.example.org").out.strip() for i in range(3)]
    # Expired 10 s ago: minted with the clock set back, not waited for.
    mint_at("gone@pool.example.org", now=int(time.time()) - 10, lifetime=1)
    r = run("key", "rotate", "POOL", "--yes")
    assert r.code == 0, r.err
    assert "3 issued token(s)" in r.out  # the expired one is not counted
    assert all(run("token", "verify", t).code == 1 for t in toks)
