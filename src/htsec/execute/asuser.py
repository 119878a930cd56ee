"""The job owner's files, touched with the owner's own permissions (as HTCondor's shadow does
with user privileges).

The server may be root; the submit's input files, its output files and its user log live in
the owner's directories. A forked helper drops to the owner's uid, gid and groups and opens
files there; the open descriptors come back over a socket pair (``SCM_RIGHTS``), so the server
reads and writes through them and never resolves a name in the owner's directories itself:
what the owner could not read stays unread, and a symlink planted in the owner's directory
writes nowhere the owner could not.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from htsec.errors import HtsecError

__all__ = ["Identity", "OwnerFiles", "owner_files"]

_MAX_ENTRIES = 10000


@dataclass(frozen=True)
class Identity:
    """Who the helper runs as."""

    name: str
    uid: int
    gid: int


class OwnerFileError(HtsecError):
    """The owner's file could not be opened or written (the message says which and why)."""

    status = 400
    code = "owner_file"


def _send(sock: socket.socket, obj: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    msg = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [msg], fds)
    else:
        sock.sendall(msg)


def _recv(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(sock, 4, 4)
    if not head:
        return None, []
    while len(head) < 4:
        more = sock.recv(4 - len(head))
        if not more:
            return None, fds
        head += more
    (size,) = struct.unpack("!I", head)
    buf = b""
    while len(buf) < size:
        more = sock.recv(size - len(buf))
        if not more:
            return None, fds
        buf += more
    return json.loads(buf), fds


def _walk(top: str) -> list[str]:
    out: list[str] = []
    for root, dirs, files in os.walk(top):
        rel = os.path.relpath(root, top)
        for name in sorted(files):
            path = os.path.join(root, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                out.append(os.path.normpath(os.path.join(rel, name)))
        dirs[:] = [d for d in sorted(dirs) if not os.path.islink(os.path.join(root, d))]
        if len(out) > _MAX_ENTRIES:
            raise OSError(f"{top} holds more than {_MAX_ENTRIES} files")
    return out


def _handle(req: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """One request, in whoever's permissions this runs with (``OSError`` when refused)."""
    op, path = req.get("op"), str(req.get("path", ""))
    if op == "read":
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            return {"ok": True, "dir": True, "files": _walk(path)}, None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return {"ok": True, "dir": False, "mode": st.st_mode & 0o777}, fd
    if op == "create":
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        return {"ok": True}, os.open(path, flags, int(req.get("mode", 0o644)) & ~_umask())
    if op == "append":
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o644 & ~_umask())
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{path} is not a regular file")
        return {"ok": True}, fd
    if op == "rename":
        os.rename(path, str(req["to"]))
        return {"ok": True}, None
    if op == "unlink":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return {"ok": True}, None
    return {"ok": False, "error": f"unknown operation {op!r}"}, None


def _umask() -> int:
    return 0o022


def _serve(sock: socket.socket) -> None:  # pragma: no cover - runs in the forked helper
    while True:
        req, _ = _recv(sock)
        if req is None:
            return
        try:
            reply, fd = _handle(req)
        except OSError as exc:
            _send(sock, {"ok": False, "error": exc.strerror or str(exc)})
            continue
        _send(sock, reply, [fd] if fd is not None else None)
        if fd is not None:
            os.close(fd)


class OwnerFiles:
    """A session with the helper; every path is absolute, in the owner's view."""

    def __init__(self, sock: socket.socket | None, pid: int, who: str) -> None:
        self._sock = sock
        self._pid = pid
        self.who = who

    def _call(self, what: str, **req: Any) -> tuple[dict[str, Any], list[int]]:
        if self._sock is None:  # htsec is the owner: no one to become
            try:
                done, fd = _handle(req)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise OwnerFileError(f"cannot {what} {req.get('path')}: {reason}") from None
            return done, [fd] if fd is not None else []
        _send(self._sock, req)
        reply, fds = _recv(self._sock)
        if reply is None:
            raise OwnerFileError(f"cannot {what} {req.get('path')} as {self.who}: helper gone")
        if not reply.get("ok"):
            for fd in fds:
                os.close(fd)
            raise OwnerFileError(f"cannot {what} {req.get('path')} as {self.who}: {reply['error']}")
        return reply, fds

    def read(self, path: str) -> tuple[int | None, dict[str, Any]]:
        """An open descriptor of a file (None for a directory: ``info['files']`` lists it)."""
        reply, fds = self._call("read", op="read", path=path)
        return (fds[0] if fds else None), reply

    def create(self, path: str, mode: int = 0o644) -> int:
        return self._call("create", op="create", path=path, mode=mode)[1][0]

    def append(self, path: str) -> int:
        return self._call("open", op="append", path=path)[1][0]

    def rename(self, path: str, to: str) -> None:
        self._call("rename", op="rename", path=path, to=to)

    def unlink(self, path: str) -> None:
        self._call("remove", op="unlink", path=path)

    def close(self) -> None:
        if self._sock is None:
            return
        self._sock.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._pid, 0)


@contextlib.contextmanager
def owner_files(who: Identity) -> Iterator[OwnerFiles]:
    """A helper running as ``who``; htsec itself when it runs as ``who`` already."""
    if os.geteuid() == who.uid and os.getegid() == who.gid:
        yield OwnerFiles(None, 0, who.name)
        return
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the helper
        code = 0
        try:
            parent.close()
            if os.geteuid() != who.uid:
                os.setgroups(os.getgrouplist(who.name, who.gid))
                os.setgid(who.gid)
                os.setuid(who.uid)
            os.umask(0o022)
            _serve(child)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    child.close()
    files = OwnerFiles(parent, pid, who.name)
    try:
        yield files
    finally:
        files.close()
