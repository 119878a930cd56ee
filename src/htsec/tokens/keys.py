"""Signing keys in HTCondor's ``passwords.d`` format.

Format (FORMATS.md section 7; HTCondor ``src/condor_utils/store_cred.cpp``
``getTokenSigningKey`` and ``src/condor_io/condor_auth_passwd.cpp``):

* The key ``POOL`` lives at ``SEC_TOKEN_POOL_SIGNING_KEY_FILE``; any other key ``NAME`` at
  ``$(SEC_PASSWORD_DIRECTORY)/NAME``.
* The file is the secret XOR-ed byte by byte with the repeating ``DE AD BE EF``; no header,
  no terminator, NUL bytes kept.
* For ``POOL`` only, the secret is concatenated with itself. The HMAC key is HKDF-SHA256 of that
  with salt ``htcondor`` and info ``master jwt``, 32 bytes.
* HTCondor refuses a key file not owned by the reading uid or with any group/other mode bit.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from htsec import _fs
from htsec.errors import BadKeyName, FileSecurityError, KeyNotFound, SigningKeyError

__all__ = [
    "POOL",
    "KeyInfo",
    "Keyring",
    "SigningKey",
    "derive_hmac_key",
    "scramble",
    "unscramble",
    "validate_key_name",
]

POOL = "POOL"
_MASK = bytes.fromhex("deadbeef")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=-]{0,254}")
#: New keys carry 64 random bytes, as much as HTCondor's own generated pool keys.
NEW_KEY_BYTES = 64
#: A key file larger than this is certainly not a key (HTCondor has no limit; we bound reads).
MAX_KEY_FILE = 64 * 1024


def scramble(secret: bytes) -> bytes:
    """XOR ``secret`` with the repeating DE AD BE EF mask (its own inverse)."""
    mask = (_MASK * (len(secret) // 4 + 1))[: len(secret)]
    return (int.from_bytes(secret, "big") ^ int.from_bytes(mask, "big")).to_bytes(
        len(secret), "big"
    )


unscramble = scramble


def derive_hmac_key(file_bytes: bytes, name: str) -> bytes:
    """The 32-byte HMAC key HTCondor derives from a key file's bytes and the key's name."""
    secret = unscramble(file_bytes)
    if name == POOL:
        secret += secret
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"htcondor", info=b"master jwt").derive(
        secret
    )


def validate_key_name(name: str) -> str:
    """Refuse names that could leave the key directory (``/``, ``..``, NUL) or are odd.

    HTCondor looks a ``kid`` up as a file name in ``SEC_PASSWORD_DIRECTORY``; htsec only accepts
    plain names of letters, digits and ``. _ @ + = -`` that do not start with a dot.
    """
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name) or ".." in name:
        raise BadKeyName(
            f"bad key name {name!r}: use letters, digits and . _ @ + = - "
            "(no '/', no '..', not starting with a dot)"
        )
    return name


@dataclass(frozen=True, repr=False)
class SigningKey:
    """A loaded key: its name, file and derived HMAC key (never printed)."""

    name: str
    path: Path
    hmac_key: bytes

    def __repr__(self) -> str:
        return f"SigningKey(name={self.name!r}, path={str(self.path)!r}, hmac_key=[secure])"

    @property
    def fingerprint(self) -> str:
        """A short public fingerprint: SHA-256 of the derived key, 16 hex digits."""
        return hashlib.sha256(b"htsec-fp:" + self.hmac_key).hexdigest()[:16]


@dataclass(frozen=True)
class KeyInfo:
    name: str
    path: Path
    mode: int
    uid: int
    secret_bytes: int
    modified: int
    fingerprint: str
    problem: str | None


class Keyring:
    """The keys of one configuration, loaded on demand and cached by file identity.

    A cached key is used only while the file's inode, size and mtime are unchanged, so replacing
    a key file (rotation) takes effect at once, as it does for HTCondor.
    """

    def __init__(self, password_dir: Path, pool_key_file: Path) -> None:
        self.password_dir = Path(password_dir)
        self.pool_key_file = Path(pool_key_file)
        self._cache: dict[str, tuple[tuple[int, int, int], SigningKey]] = {}

    def path_of(self, name: str) -> Path:
        if name == POOL:
            return self.pool_key_file
        return self.password_dir / validate_key_name(name)

    def get(self, name: str) -> SigningKey:
        """Load key ``name``; raises :class:`KeyNotFound` or :class:`FileSecurityError`."""
        path = self.path_of(name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise KeyNotFound(
                f"no signing key {name!r} (looked for {path}); create it with "
                f"'htsec key create {name}'"
            ) from None
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._cache.get(name)
        if hit is not None and hit[0] == ident:
            return hit[1]
        data = _fs.read_private(path, limit=MAX_KEY_FILE)
        if not data:
            raise SigningKeyError(
                f"key file {path} is empty; rotate it with 'htsec key rotate {name}'"
            )
        key = SigningKey(name=name, path=path, hmac_key=derive_hmac_key(data, name))
        self._cache[name] = (ident, key)
        return key

    def exists(self, name: str) -> bool:
        try:
            return self.path_of(name).is_file()
        except BadKeyName:
            return False

    def create(
        self, name: str, secret: bytes | None = None, *, replace: bool = False
    ) -> SigningKey:
        """Write a new key file (0600, atomically); refuses to overwrite unless ``replace``."""
        path = self.path_of(name)
        if path.exists() and not replace:
            raise SigningKeyError(
                f"key {name!r} already exists at {path}; "
                f"use 'htsec key rotate {name}' to replace it"
            )
        _fs.ensure_private_dir(path.parent)
        if secret is None:
            secret = secrets.token_bytes(NEW_KEY_BYTES)
        if not secret:
            raise SigningKeyError("a signing key cannot be empty")
        _fs.write_atomic(path, scramble(secret), 0o600)
        self._cache.pop(name, None)
        return self.get(name)

    def names(self) -> list[str]:
        """Key names present: POOL (if its file exists) and every plain file in the directory."""
        found: set[str] = set()
        if self.pool_key_file.is_file():
            found.add(POOL)
        if self.password_dir.is_dir():
            for entry in self.password_dir.iterdir():
                if entry.is_file() and _KEY_NAME.fullmatch(entry.name) and ".." not in entry.name:
                    found.add(entry.name)
        return sorted(found)

    def info(self, name: str) -> KeyInfo:
        path = self.path_of(name)
        st = os.stat(path)
        problem: str | None = None
        fingerprint = ""
        try:
            fingerprint = self.get(name).fingerprint
        except (FileSecurityError, SigningKeyError) as exc:
            problem = str(exc)
        return KeyInfo(
            name=name,
            path=path,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            secret_bytes=st.st_size,
            modified=int(st.st_mtime),
            fingerprint=fingerprint,
            problem=problem,
        )
