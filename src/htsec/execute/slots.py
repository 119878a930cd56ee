"""Who each slot of the execution point runs its jobs as: one account per slot.

As HTCondor's starter does with ``SLOT<N>_USER``, every slot has its own uid, so a job cannot
read another slot's running sandbox or its delivered tokens (``.condor_creds``, 0600 but
readable by anything of the same uid). Slot ``N`` runs as HTCondor's ``SLOT<N>_USER`` when it is
set, otherwise as the system account ``htsec-slot<N>`` that ``scripts/setup`` creates (one per
slot, up to ``HTSEC_EXECUTE_SLOTS`` or the number of CPUs). Named accounts rather than bare
numeric uids: ``ps``, ``ls -l`` and audit logs name them, and no later ``useradd`` can hand the
same uid to someone else. No account may be root or serve two slots; when an account is missing
the execution point does not run jobs and says which one and how to make it.

Every process of a dedicated account is the slot's: ``htsec-slot<N>`` always, a
``SLOT<N>_USER`` when it matches HTCondor's ``DEDICATED_EXECUTE_ACCOUNT_REGEXP``. Those are
swept by uid when a job of the slot ends (and at start), beyond its cgroup and session, so the
next job of the slot inherits nothing. When htsec is not root there is only its own user: every
slot runs as it, and only that user's jobs are accepted (see :mod:`htsec.execute.point`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from htsec.config import param
from htsec.errors import ConfigError
from htsec.execute.asuser import Identity

__all__ = ["SLOT_ACCOUNT", "Slot", "SlotUsers", "kill_uid", "slot_users"]

#: The system account of slot N (``scripts/setup`` creates them) when ``SLOT<N>_USER`` is unset.
SLOT_ACCOUNT = "htsec-slot{n}"


@dataclass(frozen=True)
class Slot:
    """Slot ``number``'s account; ``dedicated``: every process of its uid is the slot's."""

    number: int
    user: Identity
    dedicated: bool


@dataclass(frozen=True)
class SlotUsers:
    """The slots' accounts, or why jobs cannot run (``problem``; then ``slots`` is empty)."""

    slots: tuple[Slot, ...]
    problem: str | None = None


def _dedicated_pattern() -> re.Pattern[str] | None:
    raw = (param("DEDICATED_EXECUTE_ACCOUNT_REGEXP") or "").strip()
    if not raw:
        return None
    try:
        return re.compile(raw)
    except re.error as exc:
        raise ConfigError(
            f"DEDICATED_EXECUTE_ACCOUNT_REGEXP = {raw!r} is not a regular expression: {exc}"
        ) from None


def slot_users(count: int) -> SlotUsers:
    """The accounts of slots 1..``count`` (see the module's text)."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        own = Identity(me.pw_name, me.pw_uid, os.getegid())
        return SlotUsers(tuple(Slot(n, own, dedicated=False) for n in range(1, count + 1)))
    pattern = _dedicated_pattern()
    slots: list[Slot] = []
    taken: dict[int, int] = {}
    for n in range(1, count + 1):
        configured = (param(f"SLOT{n}_USER") or "").strip()
        name = configured or SLOT_ACCOUNT.format(n=n)
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            if configured:
                why = f"SLOT{n}_USER = {name} names no account here"
            else:
                why = (
                    f"the execution point has {count} slots (HTSEC_EXECUTE_SLOTS) but the slot "
                    f"account {name} does not exist: run scripts/setup as root with "
                    f"HTSEC_EXECUTE_SLOTS={count} (it makes one account per slot), or set "
                    f"HTSEC_EXECUTE_SLOTS = {n - 1 or 1}"
                )
            return SlotUsers((), why)
        if pw.pw_uid == 0 or pw.pw_gid == 0:
            return SlotUsers((), f"slot {n} would run jobs as {name} (uid or gid 0): never root")
        if pw.pw_uid in taken:
            return SlotUsers(
                (),
                f"slots {taken[pw.pw_uid]} and {n} would both run jobs as uid {pw.pw_uid}: "
                "each slot needs its own account, or its jobs could read each other's sandboxes",
            )
        taken[pw.pw_uid] = n
        dedicated = not configured or bool(pattern and pattern.fullmatch(name))
        slots.append(Slot(n, Identity(pw.pw_name, pw.pw_uid, pw.pw_gid), dedicated))
    return SlotUsers(tuple(slots))


def _uid_procs(uid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            for line in Path(entry.path, "status").read_text().splitlines():
                if line.startswith("Uid:"):
                    if uid in {int(x) for x in line.split()[1:]}:
                        found.append(int(entry.name))
                    break
    return found


def kill_uid(uid: int) -> int:
    """SIGKILL every process with ``uid`` as a real, effective, saved or fs uid; how many."""
    if uid == 0 or uid == os.geteuid():
        return 0
    killed = 0
    for _ in range(5):
        left = [p for p in _uid_procs(uid) if p != os.getpid()]
        if not left:
            break
        for p in left:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
                killed += 1
        time.sleep(0.02)
    return killed
