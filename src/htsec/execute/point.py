"""The execution point of ``htsec serve``: its configuration, its runner and who runs what.

When htsec is root each slot runs its jobs as its own unprivileged account (``SLOT<N>_USER``,
else ``htsec-slot<N>``, which ``scripts/setup`` creates; :mod:`htsec.execute.slots`), never as
root, so jobs of different slots cannot read each other's sandboxes or tokens; when htsec is not
root they run as htsec's own user, and then only that user's jobs are accepted (a job could
otherwise read htsec's own state). A job's
files are the owner's: read and written as the local account of the owner's name (as
HTCondor's shadow does), which must exist.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path

from htsec.config import Settings, param, positive_int_knob
from htsec.errors import ConfigError, Forbidden
from htsec.execute.asuser import Identity
from htsec.execute.records import JobBook
from htsec.execute.runner import Delivery, Runner
from htsec.execute.slots import slot_users
from htsec.store.db import Store

__all__ = ["ExecutePoint", "execute_dir", "owner_identity", "slot_count"]

log = logging.getLogger("htsec.execute")


def slot_count() -> int:
    """How many jobs run at once: ``HTSEC_EXECUTE_SLOTS``, by default the number of CPUs."""
    return positive_int_knob("HTSEC_EXECUTE_SLOTS", os.cpu_count() or 1) or 1


def owner_identity(owner: str) -> Identity:
    """The local account whose permissions a job's files are read and written with."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        if owner != me.pw_name:
            raise Forbidden(
                f"this execution point runs jobs as {me.pw_name} (htsec is not root), so it "
                f"accepts jobs of {me.pw_name} only, not of {owner}"
            )
        return Identity(me.pw_name, me.pw_uid, os.getegid())
    try:
        pw = pwd.getpwnam(owner)
    except KeyError:
        raise Forbidden(
            f"{owner} has no local account here: a job's files are read and written as its "
            "owner's local account"
        ) from None
    return Identity(pw.pw_name, pw.pw_uid, pw.pw_gid)


def execute_dir(settings: Settings) -> Path:
    """Where sandboxes go: HTCondor's ``EXECUTE``; by default ``/var/lib/htsec/execute`` when
    root (the job user must reach it; ``HTSEC_HOME`` is private) else ``$(HTSEC_HOME)/execute``.
    Made 0711; refused when someone else owns it or others may write it."""
    raw = (param("EXECUTE") or "").strip()
    if raw == "/execute" and not (param("LOCAL_DIR") or "").strip():
        raw = ""  # HTCondor's default $(LOCAL_DIR)/execute, with no LOCAL_DIR: not a choice
    if raw:
        path = Path(raw)
    elif os.geteuid() == 0:
        path = Path("/var/lib/htsec/execute")
    else:
        path = settings.home / "execute"
    if not path.exists():
        path.mkdir(parents=True, mode=0o711)
        os.chmod(path, 0o711)  # noqa: S103 - the job user must reach its sandbox # fs-ok
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ConfigError(
            f"EXECUTE = {path} must be a directory of htsec's user that no one else may write "
            f"(chown it, chmod 0711)"
        )
    return path


class ExecutePoint:
    """The jobs of one store and the runner that runs them."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        delivery: Delivery | None = None,
        slots: int | None = None,
    ) -> None:
        self.settings = settings
        self.book = JobBook(store)
        self.runner = Runner(
            self.book,
            execute_dir=execute_dir(settings),
            slots=slot_users(slots or slot_count()),
            owner_identity=owner_identity,
            delivery=delivery,
        )

    def start(self) -> None:
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()
