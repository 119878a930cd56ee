"""Who holds a lease: one name per process start, and when that process is provably gone.

A credmon's leases name their holder. ``host:pid`` is not enough: two containers with host
networking (or twin short host names) may both run a credmon as pid 7, and a pid seen from one
PID namespace means nothing in another. A :class:`Holder` is therefore

    ``<host>:<pid>:<start>:<boot id>:<pid namespace>:<nonce>``

-- the process's start time (clock ticks after boot, ``/proc/<pid>/stat`` field 22) tells a
reused pid from the holder, the kernel's boot id and the PID namespace's inode say where the
pid means something, and a random nonce makes the name unique even if all else coincided.

A lease may be taken over early only when its holder is *provably* dead: same boot, same PID
namespace, and either no process with that pid (``kill(pid, 0)`` gives ESRCH), or one that
started at another time (read from a ``/proc`` that belongs to this PID namespace). Anything
else -- another host, another boot, another namespace, a ``/proc`` from an outer namespace, an
older credmon's ``host:pid`` -- is trusted until its lease runs out.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass
from functools import cache

__all__ = ["Holder"]

_BOOT_ID = "/proc/sys/kernel/random/boot_id"
#: Linux's PID_MAX_LIMIT (include/linux/threads.h): no pid is larger.
_PID_MAX = 4 * 1024 * 1024
# ASCII digits only (str.isdigit takes "\u00b2" and "\u0663"), no leading zeros.
_PID = re.compile(r"[1-9][0-9]{0,6}")
_NUMBER = re.compile(r"0|[1-9][0-9]{0,19}")


def _start_ticks(stat: str) -> int:
    """Field 22 (starttime) of a ``/proc/<pid>/stat`` line; the command name may hold spaces
    and parentheses, so fields are counted after its last ``)``."""
    return int(stat.rpartition(")")[2].split()[19])


@cache
def _here() -> tuple[str, int]:
    """This kernel's boot id and this process's PID namespace inode ("", 0 if unknown)."""
    try:
        with open(_BOOT_ID) as f:
            boot = f.read().strip()
        return boot, os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return "", 0


def _proc_is_ours() -> bool:
    """Is the mounted ``/proc`` the one of our own PID namespace? (Under ``unshare --pid``
    without ``--mount-proc``, /proc shows the outer namespace's pids.) Its NSpid line lists our
    pid in every namespace from /proc's down to ours: one entry means they are the same."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return line.split()[1:] == [str(os.getpid())]
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    start: int
    boot_id: str
    pid_ns: int
    nonce: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}:{self.boot_id}:{self.pid_ns}:{self.nonce}"

    @classmethod
    def this_process(cls) -> Holder:
        """A fresh name for the calling process (another call gives another nonce)."""
        boot, ns = _here()
        try:
            with open("/proc/self/stat") as f:
                start = _start_ticks(f.read())
        except (OSError, ValueError, IndexError):
            start = 0
        return cls(
            host=socket.gethostname().replace(":", "_"),
            pid=os.getpid(),
            start=start,
            boot_id=boot,
            pid_ns=ns,
            nonce=secrets.token_hex(8),
        )

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """A holder name, or None for anything else (say an older credmon's ``host:pid``, or a
        pid that is no plain decimal pid: such a holder is trusted until its lease ends)."""
        parts = text.split(":")
        if len(parts) != 6:
            return None
        host, pid, start, boot, ns, nonce = parts
        if not (_PID.fullmatch(pid) and _NUMBER.fullmatch(start) and _NUMBER.fullmatch(ns)):
            return None
        if int(pid) > _PID_MAX:
            return None  # no pid is (os.kill raised OverflowError beyond a C long)
        return cls(host, int(pid), int(start), boot, int(ns), nonce)

    def provably_dead(self) -> bool:
        """True only if this holder's process has certainly ended (see the module's text)."""
        boot, ns = _here()
        if not boot or not ns or (self.boot_id, self.pid_ns) != (boot, ns):
            return False  # its pid means nothing here
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # a process exists (another user's)
        except OSError:
            return False
        if not _proc_is_ours():
            return False  # cannot tell whether it is the same process
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                start = _start_ticks(f.read())
        except FileNotFoundError:
            return True  # ended between the two looks
        except (OSError, ValueError, IndexError):
            return False
        return start != self.start  # the pid was reused by another process
