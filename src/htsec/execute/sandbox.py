"""A job's sandbox: made 0700 for the job user, filled from the owner's files, emptied back.

Once a job has run, its sandbox is the job user's: every name in it is resolved from the
sandbox's own descriptor, one component at a time with ``O_NOFOLLOW``, so a symlink the job
left (``out.txt -> /etc/shadow``) is reported, never followed; a file that is a hard link to
something the job user does not own is refused too. Output is written under a temporary name
in the owner's directory and renamed only once complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from htsec._fs import empty_dir
from htsec.execute.asuser import OwnerFiles

__all__ = ["Sandbox", "SandboxError"]

_CHUNK = 1 << 20
#: Names the execution point keeps in the sandbox (never the job's output).
RESERVED = frozenset(
    {
        "_condor_stdin",
        "_condor_stdout",
        "_condor_stderr",
        ".condor_creds",
        ".job.ad",
        ".machine.ad",
        ".htsec_transfer",
    }
)


class SandboxError(Exception):
    """A file could not be moved in or out; the message is the hold reason's detail."""


def _copy(src: int, dst: int, limit: int | None = None) -> int:
    total = 0
    while True:
        chunk = os.read(src, _CHUNK)
        if not chunk:
            return total
        total += len(chunk)
        if limit is not None and total > limit:
            raise SandboxError(f"more than {limit} bytes")
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]


def _safe_part(name: str) -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise SandboxError(f"{name!r} is not a name inside the sandbox")
    return parts


@dataclass
class Sandbox:
    """One proc's directory, owned by ``uid``/``gid``."""

    path: Path
    uid: int
    gid: int
    #: The top-level files as the job found them (name: size, mtime, inode): not output.
    inputs: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path, name: str, uid: int, gid: int) -> Sandbox:
        path = root / f"{name}_{secrets.token_hex(4)}"
        os.mkdir(path, 0o700)
        os.chown(path, uid, gid)
        return cls(path, uid, gid)

    def remove(self) -> None:
        """Remove the sandbox and whatever the job left in it, at any depth (``shutil.rmtree``
        raised ``RecursionError`` past ~1000 levels, through ``ignore_errors``); never raises."""
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                empty_dir(fd, budget=sys.maxsize)  # the job's processes are gone by now
            finally:
                os.close(fd)
        with contextlib.suppress(OSError):
            os.rmdir(self.path)

    def _dir_fd(self, parts: list[str], *, create: bool) -> int:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for part in parts:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                        os.chown(part, self.uid, self.gid, dir_fd=fd, follow_symlinks=False)
                try:
                    nxt = os.open(
                        part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                    )
                except OSError as exc:
                    raise SandboxError(f"{part}: {_why(exc)}") from None
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def write_from(self, name: str, src: int, mode: int = 0o600) -> int:
        """Copy the open file ``src`` to ``name`` in the sandbox (a new file, job user's)."""
        *dirs, base = _safe_part(name)
        dfd = self._dir_fd(dirs, create=True)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(base, flags, mode & 0o700 | 0o600, dir_fd=dfd)
            try:
                os.fchown(fd, self.uid, self.gid)
                os.fchmod(fd, (mode & 0o700) | 0o600)
                return _copy(src, fd)
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    def write_bytes(self, name: str, data: bytes, mode: int = 0o600) -> None:
        """Write a new file ``name`` (job user's) holding ``data``."""
        *dirs, base = _safe_part(name)
        dfd = self._dir_fd(dirs, create=True)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(base, flags, mode, dir_fd=dfd)
            try:
                os.fchown(fd, self.uid, self.gid)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    def open_output(self, name: str) -> int:
        """A descriptor of the job's file ``name``, never through a symlink (``SandboxError``
        saying why when it cannot be read safely)."""
        *dirs, base = _safe_part(name)
        dfd = self._dir_fd(dirs, create=False)
        try:
            try:
                fd = os.open(
                    base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd
                )
            except OSError as exc:
                raise SandboxError(f"{name}: {_why(exc)}") from None
        finally:
            os.close(dfd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_nlink > 1 and st.st_uid != self.uid):
            os.close(fd)
            raise SandboxError(f"{name}: not a regular file of the job (left as it is)")
        os.set_blocking(fd, True)
        return fd

    def exists(self, name: str) -> bool:
        try:
            *dirs, base = _safe_part(name)
            dfd = self._dir_fd(dirs, create=False)
        except SandboxError:
            return False
        try:
            os.stat(base, dir_fd=dfd, follow_symlinks=False)
            return True
        except OSError:
            return False
        finally:
            os.close(dfd)

    def mark_inputs(self) -> None:
        """Remember the top-level files before the job starts (its input, its executable)."""
        self.inputs = {}
        for entry in os.scandir(self.path):
            st = entry.stat(follow_symlinks=False)
            self.inputs[entry.name] = (st.st_size, st.st_mtime_ns, st.st_ino)

    def top_level(self) -> list[str]:
        """The top-level regular files and symlinks the job created or changed (what HTCondor
        transfers back when ``transfer_output_files`` is not given); the execution point's
        names and unchanged input files excluded."""
        out = []
        for entry in os.scandir(self.path):
            if entry.name in RESERVED or entry.name.startswith(".htsec_transfer"):
                continue
            st = entry.stat(follow_symlinks=False)
            if self.inputs.get(entry.name) == (st.st_size, st.st_mtime_ns, st.st_ino):
                continue
            if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                out.append(entry.name)
        return sorted(out)

    def usage(self) -> int:
        """Bytes the sandbox's files take (not following links)."""
        total = 0
        for root, _dirs, files in os.walk(self.path):
            for f in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, f)).st_size
        return total

    def send_output(self, name: str, owner: OwnerFiles, dest: str, limit: int | None) -> int:
        """Copy the job's ``name`` to the owner's ``dest`` (absolute): into a temporary file
        beside it, renamed when complete; nothing is left there on failure."""
        src = self.open_output(name)
        tmp = f"{os.path.dirname(dest)}/.{os.path.basename(dest)}.htsec-{secrets.token_hex(4)}"
        try:
            dst = owner.create(tmp)
            try:
                size = _copy(src, dst, limit)
                os.fsync(dst)
            finally:
                os.close(dst)
            owner.rename(tmp, dest)
            return size
        except BaseException:
            with contextlib.suppress(Exception):
                owner.unlink(tmp)
            raise
        finally:
            os.close(src)


def _why(exc: OSError) -> str:
    import errno

    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return "a symbolic link (not followed) or not a directory"
    return exc.strerror or str(exc)
