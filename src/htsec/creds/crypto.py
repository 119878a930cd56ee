"""Encryption at rest for the credential store: AES-256-GCM under data keys in a 0600 file.

Sealed value (bytes)::

    b"HS1" | key id (4 bytes) | nonce (12 bytes) | AES-GCM ciphertext and tag

The associated data is the value's place: table, column and the row's natural identity
(user, service, handle), so a sealed refresh token copied into another row or column fails to
open (NIST SP 800-38D; RFC 5116 section 2.1 "associated data").

Key file (``HTSEC_STORE_KEY_FILE``, 0600): one key per line, ``<8 hex key id> <base64 key>``;
the first line seals, every line opens. ``htsec store rekey`` writes a new first line, re-seals
every row, then drops the old lines, so readers never meet a value they cannot open.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from htsec import _fs
from htsec.errors import ConfigError, StoreError

__all__ = ["Sealer", "aad_for", "generate_key_file"]

_MAGIC = b"HS1"
_NONCE = 12
_HEADER = len(_MAGIC) + 4 + _NONCE


def aad_for(table: str, column: str, *identity: str) -> bytes:
    """Associated data naming where a sealed value lives (NUL-separated, unambiguous)."""
    return "\x00".join((table, column, *identity)).encode("utf-8")


@dataclass(frozen=True, repr=False)
class _Key:
    kid: bytes
    aead: AESGCM

    def __repr__(self) -> str:
        return f"_Key(kid={self.kid.hex()}, key=[secure])"


def _parse_key_file(path: Path) -> list[_Key]:
    try:
        data = _fs.read_private(path, limit=64 * 1024)
    except FileNotFoundError:
        raise ConfigError(
            f"store key file {path} does not exist; create it with 'htsec store init' "
            "(or set HTSEC_STORE_KEY_FILE)"
        ) from None
    keys: list[_Key] = []
    for n, line in enumerate(data.decode("ascii", "replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            kid_hex, b64 = line.split()
            kid = bytes.fromhex(kid_hex)
            raw = base64.b64decode(b64, validate=True)
        except (ValueError, binascii.Error):
            raise ConfigError(f"{path} line {n} is not '<8 hex> <base64 key>'") from None
        if len(kid) != 4 or len(raw) != 32:
            raise ConfigError(f"{path} line {n}: key id must be 4 bytes and key 32 bytes")
        keys.append(_Key(kid, AESGCM(raw)))
    if not keys:
        raise ConfigError(f"store key file {path} holds no key")
    return keys


def _key_line(raw: bytes | None = None) -> str:
    raw = raw or AESGCM.generate_key(bit_length=256)
    return f"{secrets.token_hex(4)} {base64.b64encode(raw).decode()}\n"


def generate_key_file(path: Path, *, exist_ok: bool = True) -> bool:
    """Create a key file with one fresh key; returns False if it already existed."""
    if path.exists():
        if not exist_ok:
            raise ConfigError(f"store key file {path} already exists")
        _fs.check_private(path)
        return False
    _fs.ensure_private_dir(path.parent)
    _fs.write_atomic(path, ("# htsec store data keys: first line seals\n" + _key_line()).encode())
    return True


class Sealer:
    """Seals and opens secrets with the keys of one key file (re-read when it changes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._keys: list[_Key] = []
        self._reload()

    def _reload(self) -> None:
        st = os.stat(self.path) if self.path.exists() else None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns) if st else None
        if stamp is not None and stamp == self._stamp:
            return
        self._keys = _parse_key_file(self.path)
        self._stamp = stamp

    @property
    def current_kid(self) -> str:
        return self._keys[0].kid.hex()

    def seal(self, plaintext: str, aad: bytes) -> bytes:
        key = self._keys[0]
        nonce = os.urandom(_NONCE)
        return _MAGIC + key.kid + nonce + key.aead.encrypt(nonce, plaintext.encode("utf-8"), aad)

    def kid_of(self, sealed: bytes) -> str:
        return sealed[len(_MAGIC) : len(_MAGIC) + 4].hex()

    def open(self, sealed: bytes, aad: bytes) -> str:
        """Decrypt; raises StoreError if the value was moved, altered, or its key is gone."""
        if len(sealed) < _HEADER + 16 or not sealed.startswith(_MAGIC):
            raise StoreError("a sealed value in the store is damaged")
        kid = sealed[len(_MAGIC) : len(_MAGIC) + 4]
        key = next((k for k in self._keys if k.kid == kid), None)
        if key is None:
            self._reload()  # another process may have rekeyed
            key = next((k for k in self._keys if k.kid == kid), None)
        if key is None:
            raise StoreError(f"no data key {kid.hex()} in {self.path}; was the key file replaced?")
        nonce = sealed[len(_MAGIC) + 4 : _HEADER]
        try:
            return key.aead.decrypt(nonce, sealed[_HEADER:], aad).decode("utf-8")
        except InvalidTag:
            raise StoreError("a sealed value does not belong to this row or was altered") from None

    # -- rekey -----------------------------------------------------------------------------
    def begin_rekey(self) -> str:
        """Put a new sealing key first, keeping the old ones for opening; returns its id."""
        text = self.path.read_text()
        lines = [ln for ln in text.splitlines(keepends=True) if not ln.startswith("#")]
        new = _key_line()
        _fs.write_atomic(
            self.path,
            ("# htsec store data keys: first line seals\n" + new + "".join(lines)).encode(),
        )
        self._stamp = None
        self._reload()
        return self.current_kid

    def finish_rekey(self) -> int:
        """Drop every key but the current one; returns how many were dropped."""
        first = self._keys[0]
        text = self.path.read_text()
        keep = [ln for ln in text.splitlines(keepends=True) if ln.startswith(first.kid.hex())]
        dropped = len(self._keys) - 1
        _fs.write_atomic(
            self.path, ("# htsec store data keys: first line seals\n" + "".join(keep)).encode()
        )
        self._stamp = None
        self._reload()
        return dropped
