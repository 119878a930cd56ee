"""AES-GCM sealing with the row's identity as associated data; key files and rekey."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from htsec.creds.crypto import Sealer, aad_for, generate_key_file
from htsec.errors import ConfigError, FileSecurityError, StoreError


@pytest.fixture
def sealer(tmp_path: Path) -> Sealer:
    path = tmp_path / "keys" / "store.key"
    assert generate_key_file(path)
    return Sealer(path)


def test_key_file_mode(sealer: Sealer) -> None:
    assert stat.S_IMODE(sealer.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(sealer.path.parent.stat().st_mode) == 0o700


def test_roundtrip_and_binding(sealer: Sealer) -> None:
    aad = aad_for("credentials", "refresh_token", "alice", "box", "")
    sealed = sealer.seal("rt-secret", aad)
    assert b"rt-secret" not in sealed
    assert sealer.open(sealed, aad) == "rt-secret"
    for other in (
        aad_for("credentials", "refresh_token", "bob", "box", ""),
        aad_for("credentials", "access_token", "alice", "box", ""),
        aad_for("credentials", "refresh_token", "alice", "box", "h"),
    ):
        with pytest.raises(StoreError, match="does not belong"):
            sealer.open(sealed, other)


def test_aad_is_unambiguous() -> None:
    assert aad_for("t", "c", "a_b", "") != aad_for("t", "c", "a", "_b")
    assert aad_for("t", "c", "ab", "c") != aad_for("t", "c", "a", "bc")


@given(st.binary(max_size=200))
def test_tampered_values_never_open(blob: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "k"
        generate_key_file(path)
        s = Sealer(path)
        aad = b"x"
        with pytest.raises(StoreError):
            s.open(blob, aad)
        good = bytearray(s.seal("v", aad))
        if blob:
            i = blob[0] % len(good)
            good[i] ^= 1 | (blob[-1] & 0xFE)
            with pytest.raises(StoreError):
                s.open(bytes(good), aad)


def test_rekey_keeps_old_readable_until_finished(sealer: Sealer) -> None:
    aad = b"row"
    old = sealer.seal("v", aad)
    old_kid = sealer.current_kid
    new_kid = sealer.begin_rekey()
    assert new_kid != old_kid
    assert sealer.kid_of(sealer.seal("v", aad)) == new_kid
    assert sealer.open(old, aad) == "v"
    other_process = Sealer(sealer.path)
    assert other_process.open(old, aad) == "v"
    assert sealer.finish_rekey() == 1
    with pytest.raises(StoreError, match="no data key"):
        sealer.open(old, aad)


def test_other_process_picks_up_new_key(sealer: Sealer) -> None:
    reader = Sealer(sealer.path)
    sealer.begin_rekey()
    assert reader.open(sealer.seal("v", b"a"), b"a") == "v"


def test_unsafe_or_bad_key_file(tmp_path: Path) -> None:
    path = tmp_path / "k"
    generate_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(FileSecurityError, match="chmod 600"):
        Sealer(path)
    os.chmod(path, 0o600)
    path.write_text("zz not-base64\n")
    with pytest.raises(ConfigError, match="line 1"):
        Sealer(path)
    with pytest.raises(ConfigError, match="htsec store init"):
        Sealer(tmp_path / "missing")


@given(st.binary(max_size=400))
def test_key_file_parser_only_raises_config_error(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "k"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, data)
        os.close(fd)
        with contextlib.suppress(ConfigError):
            Sealer(path)
