"""The local side of a transfer: a download's file appears complete or not at all, and an
upload reads only the regular file it was given.

A download is written to a hidden temporary name beside its target (``O_EXCL``,
``O_NOFOLLOW``) and renamed over the target only when every byte arrived: a failed or
interrupted download leaves no file that looks complete, and an existing file of that name is
untouched. The rename replaces a symlink planted at the target instead of writing through it.
An upload opens its file without following a symlink and refuses anything but a regular file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from htsec.errors import TransferFailed

__all__ = ["Sink", "open_source"]


class Sink:
    """A download in progress to ``path``: :meth:`write` appends, :meth:`restart` rewinds to
    an offset (for a resumed or restarted request), :meth:`commit` renames it into place; a
    ``with`` block that raises removes it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.name or self.path.name in (".", ".."):
            raise TransferFailed(f"not a file name: {self.path}", kind="Parameter")
        self.tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
        self.fd = os.open(
            self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666
        )
        self.size = 0
        self._done = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.size += n

    def restart(self, offset: int = 0) -> None:
        """Continue writing at ``offset`` (0: start over), dropping anything after it."""
        os.ftruncate(self.fd, offset)
        os.lseek(self.fd, offset, os.SEEK_SET)
        self.size = offset

    def commit(self) -> None:
        os.close(self.fd)
        self._done = True
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        if not self._done:
            self._done = True
            os.close(self.fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if typ is not None or not self._done:
            self.discard()


def open_source(path: Path) -> tuple[BinaryIO, int]:
    """``path`` opened for reading, and its size: never through a symlink, only a regular file.

    :raises TransferFailed: (``Specification``) for a symlink or anything but a regular file.
    :raises OSError: when it cannot be opened otherwise (missing, unreadable).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink
            raise TransferFailed(
                f"{path} is a symbolic link: only regular files are uploaded",
                kind="Specification",
            ) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise TransferFailed(f"{path} is not a regular file", kind="Specification")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=0), st.st_size
