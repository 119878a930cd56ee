"""Key files in HTCondor's passwords.d format, and the safety rules for reading them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from htsec.errors import BadKeyName, FileSecurityError, KeyNotFound, SigningKeyError
from htsec.tokens.keys import Keyring, scramble, unscramble, validate_key_name


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    return Keyring(tmp_path / "passwords.d", tmp_path / "pool" / "POOL")


@given(st.binary(max_size=200))
def test_scramble_roundtrip_and_mask(secret: bytes) -> None:
    scrambled = scramble(secret)
    assert len(scrambled) == len(secret)
    assert unscramble(scrambled) == secret
    mask = bytes.fromhex("deadbeef")
    assert all(s ^ mask[i % 4] == b for i, (s, b) in enumerate(zip(scrambled, secret, strict=True)))


def test_create_writes_htcondor_format_0600(keyring: Keyring) -> None:
    k = keyring.create("site-x", b"\x00secret\x00")
    data = k.path.read_bytes()
    assert data == scramble(b"\x00secret\x00")
    assert stat.S_IMODE(os.stat(k.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(k.path.parent).st_mode) == 0o700
    assert "secure" in repr(k) and data.hex() not in repr(k)


def test_pool_uses_pool_key_file(keyring: Keyring, tmp_path: Path) -> None:
    keyring.create("POOL")
    assert (tmp_path / "pool" / "POOL").is_file()
    assert keyring.names() == ["POOL"]


def test_create_refuses_overwrite(keyring: Keyring) -> None:
    keyring.create("a")
    with pytest.raises(SigningKeyError, match="rotate"):
        keyring.create("a")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_refuses_group_or_world_readable(keyring: Keyring, mode: int) -> None:
    k = keyring.create("a")
    os.chmod(k.path, mode)
    keyring._cache.clear()
    with pytest.raises(FileSecurityError, match=r"chmod 600"):
        keyring.get("a")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_refuses_foreign_owner(keyring: Keyring) -> None:
    k = keyring.create("a")
    os.chown(k.path, 65534, 65534)
    keyring._cache.clear()
    with pytest.raises(FileSecurityError, match="owned by uid 65534"):
        keyring.get("a")


def test_missing_key_says_how_to_create(keyring: Keyring) -> None:
    with pytest.raises(KeyNotFound, match="htsec key create nope"):
        keyring.get("nope")


@pytest.mark.parametrize("name", ["", "../x", "a/b", "..", ".hidden", "a\x00b", "a b", "x" * 300])
def test_bad_names(name: str) -> None:
    with pytest.raises(BadKeyName):
        validate_key_name(name)


def test_rotation_changes_key_and_cache_follows(keyring: Keyring) -> None:
    a = keyring.create("a")
    b = keyring.create("a", replace=True)
    assert a.hmac_key != b.hmac_key
    assert keyring.get("a").hmac_key == b.hmac_key


def test_empty_key_file_is_refused(keyring: Keyring) -> None:
    keyring.create("a")
    keyring.path_of("a").write_bytes(b"")
    keyring._cache.clear()
    with pytest.raises(SigningKeyError, match="empty"):
        keyring.get("a")
