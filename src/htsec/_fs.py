"""The one way htsec writes files that matter.

Every secret file is created in its final directory under a temporary name with ``O_EXCL`` and
its final mode, written, fsynced, renamed over the target with :func:`os.replace`, and then the
directory is fsynced, so a crash leaves either the old file or the new one, never half of one
(DESIGN.md, "Security invariants"; certbot ``storage.atomic_rewrite`` plus the missing fsyncs).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from htsec.errors import FileSecurityError

__all__ = [
    "append_private",
    "check_private",
    "empty_dir",
    "ensure_private_dir",
    "make_dir",
    "read_private",
    "remove",
    "touch",
    "write_atomic",
]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chown_ids(uid: int | None, gid: int | None) -> tuple[int, int] | None:
    if uid is None and gid is None:
        return None
    return (-1 if uid is None else uid, -1 if gid is None else gid)


def write_atomic(
    path: Path,
    data: bytes,
    mode: int = 0o600,
    *,
    uid: int | None = None,
    gid: int | None = None,
    dir_fd: int | None = None,
    durable: bool = True,
) -> None:
    """Replace ``path`` with ``data`` atomically; the new file has ``mode`` from its creation.

    ``uid``/``gid`` (either may be None for "leave as is") are applied to the temporary file
    before the rename, so the final name never points at a file with the wrong owner.
    With ``dir_fd`` (see :func:`open_dir`) only ``path.name`` is used, relative to that open
    directory: nobody can swap the directory for a symlink between the check and the write.
    ``durable=False`` skips both fsyncs, for files that do not outlive a crash anyway (a job
    sandbox's tokens): still atomic, never half a file, but the rename may be lost.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    if dir_fd is not None:
        path, tmp = Path(path.name), Path(tmp.name)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
    try:
        try:
            ids = _chown_ids(uid, gid)
            if ids is not None:
                os.fchown(fd, *ids)  # before fchmod: chown may clear set-id bits
            os.fchmod(fd, mode)  # the umask may have removed bits we asked for
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    if not durable:
        return
    if dir_fd is not None:
        os.fsync(dir_fd)
    else:
        _fsync_dir(path.parent)


def remove(path: Path, *, dir_fd: int | None = None) -> bool:
    """Delete ``path`` durably; returns False if it did not exist. With ``dir_fd``, only
    ``path``'s name, relative to that open directory."""
    try:
        os.unlink(Path(path).name if dir_fd is not None else path, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    if dir_fd is not None:
        os.fsync(dir_fd)
    else:
        _fsync_dir(Path(path).parent)
    return True


def open_dir(path: Path) -> int:
    """Open the directory ``path`` itself, never through a symlink (``O_NOFOLLOW``); the
    descriptor pins it for :func:`write_atomic`, :func:`remove` and reads with ``dir_fd``.

    :raises FileNotFoundError: if it does not exist.
    :raises FileSecurityError: if it is a symlink or not a directory.
    """
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:  # ELOOP: a symlink; ENOTDIR: a file
        raise FileSecurityError(
            f"{path} is not a directory (a symlink or a file): {exc.strerror}"
        ) from None


def make_dir(path: Path, mode: int, *, uid: int | None = None, gid: int | None = None) -> bool:
    """Create the single directory ``path`` with exactly ``mode``; False if it already existed.

    ``mkdir(2)`` masks the mode with the umask and ignores set-group-id, so the mode is set
    again afterwards (HTCondor's OAuth credential root wants 2770). The parent must exist.
    An existing entry is left alone (the caller checks it); the parent is fsynced on creation.
    """
    path = Path(path)
    try:
        os.mkdir(path, mode & 0o777)
    except FileExistsError:
        return False
    # fchown/fchmod on a descriptor opened without following symlinks: the name we just made
    # cannot be swapped for a link to somewhere else between the calls.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        ids = _chown_ids(uid, gid)
        if ids is not None:
            os.fchown(fd, *ids)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)
    return True


def touch(
    path: Path,
    mode: int = 0o600,
    *,
    update_mtime: bool = True,
    uid: int | None = None,
    gid: int | None = None,
) -> bool:
    """Create an empty marker file with ``mode`` (True) or, if it exists, optionally bump its mtime.

    Never truncates and never follows a symlink at ``path``. With ``update_mtime=False`` an
    existing file is left untouched (HTCondor's ``safe_fcreate_keep_if_exists``).
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        if update_mtime:
            fd = os.open(path, flags)
            try:
                os.utime(fd)
            finally:
                os.close(fd)
        return False
    try:
        ids = _chown_ids(uid, gid)
        if ids is not None:
            os.fchown(fd, *ids)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)
    return True


def ensure_private_dir(path: Path, mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) with ``mode`` or check that an existing one is safe."""
    path = Path(path)
    if not path.exists():
        path.mkdir(parents=True, mode=mode, exist_ok=True)
        os.chmod(path, mode)
        return path
    check_private(path, kind="directory")
    return path


def check_private(path: Path, *, kind: str = "file") -> os.stat_result:
    """Refuse a secret file or directory that others could read or that someone else owns.

    HTCondor refuses a key file that is not owned by the reading uid or that has any group or
    other mode bit (``src/condor_utils/secure_file.cpp``); htsec applies the same rule and also
    accepts files owned by root, which is how pools install ``passwords.d``.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FileSecurityError(f"cannot inspect {kind} {path}: {exc.strerror}") from None
    if kind == "file" and not stat.S_ISREG(st.st_mode):
        raise FileSecurityError(f"{path} is not a regular file")
    uid = os.geteuid()
    if st.st_uid not in (uid, 0):
        raise FileSecurityError(
            f"{kind} {path} is owned by uid {st.st_uid}, not by you (uid {uid}) or root; "
            f"fix: chown {uid} {path}"
        )
    if st.st_mode & 0o077:
        want = "700" if kind == "directory" else "600"
        raise FileSecurityError(
            f"{kind} {path} has mode {stat.S_IMODE(st.st_mode):04o}, readable by others; "
            f"fix: chmod {want} {path}"
        )
    return st


def read_private(path: Path, *, limit: int = 1 << 20) -> bytes:
    """Read a secret file after :func:`check_private`; refuse files over ``limit`` bytes."""
    check_private(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:  # e.g. a root-owned 0600 file read by another user
        raise FileSecurityError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise FileSecurityError(f"{path} is larger than {limit} bytes; is it the right file?")
    return data


def append_private(path: Path, text: str) -> None:
    """Append to a private log file (created 0600 in a 0700 directory)."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(text)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def empty_dir(top: int, *, max_open: int = 32, budget: int = 1_000_000) -> None:
    """Remove everything inside the open directory ``top``, never following a symlink.

    For trees someone else made (a job's sandbox): iterative, where ``shutil.rmtree`` recurses
    once per level and raises ``RecursionError`` (not ``OSError``, so ``ignore_errors`` does not
    help) in a tree nested about 1000 deep; at most ``max_open`` descriptors are held, a
    directory deeper than that is first moved up into ``top``. At most ``budget`` entries are
    handled, so a process still writing there cannot keep the caller busy for ever.

    :raises OSError: for an entry that cannot be removed (``ENOTEMPTY`` once over budget).
    """
    stack: list[tuple[int, str, list[str]]] = [(os.dup(top), "", [])]
    try:
        while stack:
            fd, name, pending = stack[-1]
            if not pending:
                pending.extend(os.listdir(fd))  # what is there now, or appeared meanwhile
            if not pending:
                stack.pop()
                os.close(fd)
                if stack:
                    os.rmdir(name, dir_fd=stack[-1][0])
                continue
            entry = pending.pop()
            budget -= 1
            if budget < 0:
                raise OSError(errno.ENOTEMPTY, "too many entries to remove", entry)
            try:
                st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(entry, dir_fd=fd)
                elif len(stack) < max_open:
                    stack.append((os.open(entry, _DIR_FLAGS, dir_fd=fd), entry, []))
                else:
                    moved = f".htsec-rm-{secrets.token_hex(8)}"
                    os.rename(entry, moved, src_dir_fd=fd, dst_dir_fd=stack[0][0])
            except FileNotFoundError:
                pass
    finally:
        for fd, _, _ in stack:
            os.close(fd)
