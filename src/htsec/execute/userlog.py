"""The job's user log (submit ``log =``), in HTCondor's event text: submit (000), execute
(001), evicted (004), terminated (005), aborted (009), held (012); each event ends with
``...``. Written as the owner, appended."""

from __future__ import annotations

import contextlib
import os
import socket
import time

from htsec.execute.asuser import Identity, OwnerFileError, owner_files

__all__ = ["event", "write_event"]

_HOST = f"<{socket.gethostname()}>"


def event(code: int, cluster: int, proc: int, text: str, when: float | None = None) -> str:
    """One event's text."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when or time.time()))
    return f"{code:03d} ({cluster:03d}.{proc:03d}.000) {stamp} {text}\n...\n"


def submitted(cluster: int, proc: int) -> str:
    return event(0, cluster, proc, f"Job submitted from host: {_HOST}")


def executing(cluster: int, proc: int) -> str:
    return event(1, cluster, proc, f"Job executing on host: {_HOST}")


def terminated(cluster: int, proc: int, exit_code: int | None, signal: int | None) -> str:
    if signal is not None:
        how = f"\t(0) Abnormal termination (signal {signal})"
    else:
        how = f"\t(1) Normal termination (return value {exit_code})"
    return event(5, cluster, proc, f"Job terminated.\n{how}")


def held(cluster: int, proc: int, reason: str, code: int) -> str:
    return event(12, cluster, proc, f"Job was held.\n\t{reason}\n\tCode {code} Subcode 0")


def aborted(cluster: int, proc: int, who: str) -> str:
    return event(9, cluster, proc, f"Job was aborted.\n\tvia htsec rm (by user {who})")


def evicted(cluster: int, proc: int) -> str:
    return event(4, cluster, proc, "Job was evicted.\n\t(0) Job was not checkpointed.")


def write_event(who: Identity, path: str | None, text: str) -> str | None:
    """Append ``text`` to the owner's log ``path``; the reason when it could not be."""
    if not path:
        return None
    with owner_files(who) as files:
        try:
            fd = files.append(path)
        except OwnerFileError as exc:
            return str(exc)
        try:
            os.write(fd, text.encode())
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    return None
