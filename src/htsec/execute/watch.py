"""Change notifications for HTCondor's credential directory, from the kernel (``inotify(7)``).

A credmon publishes a refreshed access token by renaming a new ``<root>/<user>/<stem>.use`` into
place (htsec's credmon, ``condor_credmon_oauth`` and HTCondor's web server all do). This is the
one signal every credmon gives, in this process or another one, so the delivery to job sandboxes
(:mod:`htsec.execute.creds`) listens to it rather than to something only htsec's own credmon
could send. :class:`CredDirWatch` watches the root for user directories appearing and each
user directory asked for (:meth:`CredDirWatch.watch_user`) for ``.use`` files renamed in or
written; it reports ``(user, stem)``. It blocks in ``poll(2)`` with no timeout: no polling loop.

Python has no inotify module; the three system calls are reached through :mod:`ctypes` (Linux
only, as is the local execution point).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from htsec.creds.files import split_suffix
from htsec.creds.names import is_local_user
from htsec.errors import ConfigError

__all__ = ["CredDirWatch", "Inotify"]

# <sys/inotify.h>
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_CLOEXEC = os.O_CLOEXEC
IN_NONBLOCK = os.O_NONBLOCK

log = logging.getLogger("htsec.execute")

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len
_ROOT_MASK = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW
_USER_MASK = IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF
_USER_MASK |= IN_ONLYDIR | IN_DONT_FOLLOW

Event = tuple[int, int, str]  # wd, mask, name ("" for the watched directory itself)


class Inotify:
    """One inotify instance: add and remove watches, read what happened (non-blocking)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(name, use_errno=True)
        self._libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        fd = self._libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if fd < 0:
            code = ctypes.get_errno()
            raise ConfigError(f"inotify is not available: {os.strerror(code)}")
        self.fd: int = fd

    def add(self, path: Path, mask: int) -> int:
        """A watch on ``path`` (never through a symlink); its descriptor.

        :raises OSError: if ``path`` cannot be watched (gone, not a directory, a symlink).
        """
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(path))
        return int(wd)

    def remove(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # EINVAL if the kernel dropped it: fine

    def read(self) -> list[Event]:
        """The events queued now (none if nothing is)."""
        try:
            data = os.read(self.fd, 64 * 1024)
        except BlockingIOError:
            return []
        out: list[Event] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            raw = data[offset : offset + length].rstrip(b"\0")
            offset += length
            out.append((wd, mask, os.fsdecode(raw)))
        return out

    def close(self) -> None:
        os.close(self.fd)


class CredDirWatch:
    """Reports ``.use`` files written under a credential root, per user, from one thread.

    ``on_change(user, stem)`` is called from the watch thread for every ``<stem>.use`` a
    watched user's directory receives; ``on_change(user, None)`` when the user's directory
    itself (re)appears or events were lost (``IN_Q_OVERFLOW``): then everything of that user
    (or of every user) may have changed. ``wake`` runs other work on the same thread:
    :meth:`wake` makes it call ``on_wake()``.
    """

    def __init__(
        self,
        root: Path | None,
        on_change: Callable[[str, str | None], None],
        *,
        on_wake: Callable[[], None] | None = None,
    ) -> None:
        self.root = root
        self.on_change = on_change
        self.on_wake = on_wake
        self._lock = threading.Lock()
        self._users: dict[str, int | None] = {}  # wanted user -> watch descriptor, if any
        self._by_wd: dict[int, str] = {}
        self._notify = Inotify() if root is not None else None
        self._root_wd: int | None = None
        self._event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="htsec-cred-watch", daemon=True)

    # -- control -----------------------------------------------------------------------------
    def start(self) -> None:
        """Watch the root (if any) and start the thread. A root that cannot be watched (not
        there, not readable) is logged once; then only :meth:`wake` brings news."""
        if self._notify is not None and self.root is not None:
            try:
                self._root_wd = self._notify.add(self.root, _ROOT_MASK)
            except OSError as exc:
                log.warning(
                    "cannot watch the credential directory %s (%s): refreshed tokens reach "
                    "running jobs only from a credmon in this process",
                    self.root,
                    exc.strerror,
                )
                self._notify.close()
                self._notify = None
        self._thread.start()

    @property
    def watching(self) -> bool:
        """True while the credential directory is watched."""
        return self._notify is not None

    def close(self) -> None:
        """Stop the thread and drop every watch."""
        self._stopping = True
        os.eventfd_write(self._event, 1)
        if self._thread.is_alive():
            self._thread.join()
        if self._notify is not None:
            self._notify.close()
        os.close(self._event)

    def wake(self) -> None:
        """Have the watch thread call ``on_wake()`` soon (safe from any thread)."""
        os.eventfd_write(self._event, 1)

    def watch_user(self, user: str) -> None:
        """Report ``user``'s ``.use`` files from now on (a missing directory is watched from
        when it appears); :meth:`unwatch_user` ends it."""
        with self._lock:
            if user in self._users:
                return
            self._users[user] = None
            self._add_user(user)

    def unwatch_user(self, user: str) -> None:
        with self._lock:
            wd = self._users.pop(user, None)
            if wd is not None and self._notify is not None:
                self._by_wd.pop(wd, None)
                self._notify.remove(wd)

    def _add_user(self, user: str) -> bool:
        """Watch ``user``'s directory if it is there (lock held); True if a watch was added."""
        if self._notify is None or self.root is None or self._users.get(user) is not None:
            return False
        try:
            wd = self._notify.add(self.root / user, _USER_MASK)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                log.warning(
                    "cannot watch %s (%s): refreshed tokens of %s reach running jobs only "
                    "from a credmon in this process",
                    self.root / user,
                    exc.strerror,
                    user,
                )
            return False  # not there yet (or not a directory): the root's watch tells
        self._users[user] = wd
        self._by_wd[wd] = user
        return True

    # -- the thread --------------------------------------------------------------------------
    def _run(self) -> None:
        import select

        poller = select.poll()
        poller.register(self._event, select.POLLIN)
        if self._notify is not None:
            poller.register(self._notify.fd, select.POLLIN)
        while not self._stopping:
            ready = {fd for fd, _ in poller.poll()}  # no timeout: woken by the kernel only
            if self._event in ready:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._event)
                if self._stopping:
                    return
                if self.on_wake is not None:
                    self._guarded(self.on_wake)
            if self._notify is not None and self._notify.fd in ready:
                self._guarded(functools.partial(self._dispatch, self._notify.read()))

    @staticmethod
    def _guarded(call: Callable[[], None]) -> None:
        """A callback's failure is logged; the thread goes on (later events still count)."""
        try:
            call()
        except Exception:
            log.exception("credential watch: a callback failed")

    def _dispatch(self, events: list[Event]) -> None:
        changed: set[tuple[str, str | None]] = set()
        overflow = False
        with self._lock:
            for wd, mask, name in events:
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                elif wd == self._root_wd:
                    if mask & IN_ISDIR and name in self._users and self._add_user(name):
                        changed.add((name, None))  # appeared: whatever it holds is new
                elif (user := self._by_wd.get(wd)) is not None:
                    if mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF):
                        self._by_wd.pop(wd, None)
                        if self._users.get(user) == wd:
                            self._users[user] = None  # watched again when it reappears
                            if self._add_user(user):  # ... or it is already back
                                changed.add((user, None))
                        continue
                    stem, suffix = split_suffix(name)
                    if suffix == ".use":
                        changed.add((user, stem))
            if overflow:
                for wanted in list(self._users):
                    self._add_user(wanted)
                changed = {(wanted, None) for wanted in self._users}
        for who, which in sorted(changed, key=lambda c: (c[0], c[1] or "")):
            if is_local_user(who):
                self.on_change(who, which)
