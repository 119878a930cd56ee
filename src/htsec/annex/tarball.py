"""The annex's configuration tarball: built by ``htsec annex create``, installed at boot.

The archive holds ``htsec-annex.json`` (which annex, lease end), ``config.d/00htsec-annex.config``
(HTCondor configuration: IDTOKENS only, integrity and encryption, the collector, ``AnnexName`` /
``IsAnnex`` / ``EC2InstanceID`` in the startd and master ads, idle and lease shutdown) and
``tokens.d/htsec-annex-<name>`` (an ID token limited to READ, ADVERTISE_STARTD and
ADVERTISE_MASTER that expires at the lease end). Never a pool password.

:func:`install` is the instance side: it accepts only that layout (regular files and
directories under ``config.d/`` and ``tokens.d/``; no absolute paths, ``..``, links or devices),
writes every file owned by the installing user (``tar --no-same-owner``) with fixed modes, and
refuses an archive made for another annex.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from htsec._fs import make_dir, open_dir, write_atomic
from htsec.annex.names import validate_name
from htsec.errors import AnnexError, FileSecurityError

__all__ = ["MANIFEST", "AnnexConfig", "build", "install", "read_manifest", "render_config"]

MANIFEST = "htsec-annex.json"
CONFIG_FILE = "config.d/00htsec-annex.config"
_MAX_ARCHIVE = 1 << 20
_MAX_MEMBERS = 64
_MAX_UNPACKED = 8 << 20
_TOP = ("config.d", "tokens.d")


@dataclass(frozen=True)
class AnnexConfig:
    """What the configuration of one annex says."""

    name: str
    collector: str
    lease_end: int
    idle: int
    token: str
    owners: Sequence[str] = ()


def _quote(value: str) -> str:
    if any(c in value for c in '"\\\n\r'):
        raise AnnexError(f"{value!r} cannot be written into a ClassAd string")
    return f'"{value}"'


def render_config(cfg: AnnexConfig) -> str:
    """The HTCondor configuration of the annex (one file, sorted first in ``config.d``)."""
    validate_name(cfg.name)
    if cfg.idle <= 0 or cfg.lease_end <= 0:
        raise AnnexError("idle and lease must be > 0")
    for value in (cfg.collector, *cfg.owners):
        if not value or any(c.isspace() or c in "\"'\\,$()" for c in value):
            raise AnnexError(f"{value!r} is not a host name or user name")
    start = "MayUseAWS =?= True"
    if cfg.owners:
        start += f" && stringListMember(Owner, {_quote(','.join(cfg.owners))})"
    return "\n".join(
        [
            f"# htsec annex {cfg.name}: written by 'htsec annex create'; replaced at each boot.",
            f"AnnexName = {_quote(cfg.name)}",
            "IsAnnex = True",
            f"AnnexLeaseEnd = {int(cfg.lease_end)}",
            "STARTD_ATTRS = $(STARTD_ATTRS) AnnexName IsAnnex EC2InstanceID",
            "MASTER_ATTRS = $(MASTER_ATTRS) AnnexName IsAnnex EC2InstanceID",
            f"COLLECTOR_HOST = {cfg.collector}",
            "# ID tokens only: no pool password, no other method.",
            "SEC_DEFAULT_AUTHENTICATION = REQUIRED",
            "SEC_DEFAULT_AUTHENTICATION_METHODS = IDTOKENS",
            "SEC_CLIENT_AUTHENTICATION_METHODS = IDTOKENS",
            "SEC_DEFAULT_INTEGRITY = REQUIRED",
            "SEC_DEFAULT_ENCRYPTION = REQUIRED",
            "SEC_PASSWORD_FILE =",
            f"START = {start}",
            "# Idle: the startd exits after this many seconds unclaimed, the master follows and",
            "# its shutdown script powers the instance off (shutdown behaviour: terminate).",
            f"STARTD_NOCLAIM_SHUTDOWN = {int(cfg.idle)}",
            "MASTER.DAEMON_SHUTDOWN_FAST = (STARTD_StartTime =?= 0)",
            "# Lease: the daemons stop at its end even if the cloud-side check never runs.",
            "MASTER.DAEMON_SHUTDOWN = time() >= $(AnnexLeaseEnd)",
            "STARTD.DAEMON_SHUTDOWN = time() >= $(AnnexLeaseEnd)",
            "",
        ]
    )


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = mtime
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def build(cfg: AnnexConfig, *, now: int | None = None) -> bytes:
    """The gzipped tarball for ``cfg``."""
    mtime = int(time.time()) if now is None else now
    manifest = {"annex": cfg.name, "lease_end": int(cfg.lease_end), "format": 1}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST, json.dumps(manifest, sort_keys=True).encode(), 0o644, mtime)
        _add(tar, CONFIG_FILE, render_config(cfg).encode(), 0o644, mtime)
        token_file = f"tokens.d/htsec-annex-{cfg.name}"
        _add(tar, token_file, (cfg.token.strip() + "\n").encode(), 0o600, mtime)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _open(data: bytes) -> tarfile.TarFile:
    if len(data) > _MAX_ARCHIVE:
        raise AnnexError(f"configuration archive is {len(data)} bytes; at most {_MAX_ARCHIVE}")
    # The whole stream first: gzip's CRC and length are checked only at its end, which a
    # tar reader may never reach. Bounded, so a small bomb cannot fill memory.
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        raw = inflate.decompress(data, _MAX_UNPACKED)
    except zlib.error as exc:
        raise AnnexError(f"configuration archive is corrupted: {exc}") from None
    if not inflate.eof or inflate.unconsumed_tail or inflate.unused_data:
        raise AnnexError("configuration archive is corrupted, truncated or too large")
    try:
        return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AnnexError(f"configuration archive is corrupted: {exc}") from None


def _safe_members(tar: tarfile.TarFile) -> list[tuple[tarfile.TarInfo, PurePosixPath]]:
    members: list[tuple[tarfile.TarInfo, PurePosixPath]] = []
    try:
        infos = tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AnnexError(f"configuration archive is corrupted: {exc}") from None
    if len(infos) > _MAX_MEMBERS:
        raise AnnexError(f"configuration archive has {len(infos)} members; at most {_MAX_MEMBERS}")
    for info in infos:
        path = PurePosixPath(info.name)
        if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in info.name:
            raise AnnexError(f"configuration archive member {info.name!r} leaves the tree")
        if not (info.isfile() or info.isdir()):
            raise AnnexError(
                f"configuration archive member {info.name!r} is a link or device; refused"
            )
        # A file is always <top>/<name>: a file named config.d or tokens.d itself is refused
        # here, not by a rename over the directory later.
        depth = 2 if info.isfile() else len(path.parts)
        if path.as_posix() != MANIFEST and (
            path.parts[0] not in _TOP or len(path.parts) != depth or depth > 2
        ):
            raise AnnexError(
                f"configuration archive member {info.name!r} is not a file directly in "
                "config.d/ or tokens.d/"
            )
        members.append((info, path))
    return members


def read_manifest(data: bytes) -> dict[str, object]:
    """The archive's manifest (a corrupted archive or one without it is refused)."""
    with _open(data) as tar:
        for info, path in _safe_members(tar):
            if path.as_posix() == MANIFEST and info.isfile():
                raw = tar.extractfile(info)
                assert raw is not None
                try:
                    manifest = json.loads(raw.read(4096))
                except (ValueError, tarfile.TarError, OSError, EOFError):
                    break
                if isinstance(manifest, dict):
                    return manifest
        raise AnnexError(f"configuration archive has no readable {MANIFEST}; refused")


def install(data: bytes, root: Path, *, annex: str) -> list[Path]:
    """Install the archive of annex ``annex`` under ``root`` (the HTCondor config directory).

    Refuses an archive made for another annex, and any member that is not a regular file or
    directory under ``config.d/`` or ``tokens.d/``. Files are owned by the caller; token files
    are 0600 in a 0700 ``tokens.d``, configuration files 0644. Returns the files written.
    """
    manifest = read_manifest(data)
    if manifest.get("annex") != annex:
        raise AnnexError(
            f"configuration archive is for annex {manifest.get('annex')!r}, not {annex!r}; refused"
        )
    if not root.is_dir():
        raise AnnexError(f"HTCondor's configuration directory {root} does not exist")
    written: list[Path] = []
    with _open(data) as tar:
        members = _safe_members(tar)
        for top, mode in (("config.d", 0o755), ("tokens.d", 0o700)):
            make_dir(root / top, mode)
            # Checked and set through one descriptor (O_NOFOLLOW): no symlink swapped in
            # between the check and the chmod.
            try:
                fd = open_dir(root / top)
            except FileSecurityError as exc:
                raise AnnexError(f"{exc}; refused") from None
            try:
                if os.fstat(fd).st_uid != os.geteuid():
                    raise AnnexError(f"{root / top} is not owned by this user; refused")
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        for info, path in members:
            if path.as_posix() == MANIFEST or info.isdir():
                continue
            raw = tar.extractfile(info)
            if raw is None:
                raise AnnexError(f"configuration archive member {info.name!r} cannot be read")
            target = root.joinpath(*path.parts)
            mode = 0o600 if path.parts[0] == "tokens.d" else 0o644
            try:
                body = raw.read(_MAX_ARCHIVE)
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise AnnexError(f"configuration archive is corrupted: {exc}") from None
            write_atomic(target, body, mode)
            written.append(target)
    return written
