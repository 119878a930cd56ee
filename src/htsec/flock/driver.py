"""What the shepherd drives: one small interface, and the driver for htsec's own execution point.

A driver observes the pool (each host's mode, busy, health; the local idle job count) and carries
out one action on one host. Observation errors are not raised: they come back as an incomplete
:class:`Snapshot` (the policy then lends nothing). ``apply`` raises :class:`SwitchFailed` when a
host could not be switched; the shepherd logs it and the next cycle sees the host as it is.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from htsec._fs import write_atomic
from htsec.flock.policy import Action, Host, Kind, Mode
from htsec.store.db import Store
from htsec.store.models import JobProc

__all__ = ["Driver", "LocalDriver", "Snapshot", "SwitchFailed", "result_mode"]


class SwitchFailed(Exception):
    """A host could not be switched (the message names the host and the command); the
    shepherd logs it, audits it as failed and carries on with the other hosts."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    hosts: list[Host]
    idle_jobs: int | None
    complete: bool = True
    errors: list[str] = field(default_factory=list)


class Driver(Protocol):
    def observe(self) -> Snapshot: ...

    def apply(self, action: Action, host: Host) -> None: ...


def result_mode(action: Action, host: Host) -> Mode:
    """The mode a host is in once ``action`` is done."""
    if action.kind is Kind.LEND:
        return Mode.FLOCKING
    if action.kind is Kind.DRAIN:
        return Mode.DRAINING
    if action.kind is Kind.FINISH:
        return host.target or Mode.REGULAR
    return Mode.REGULAR


class LocalDriver:
    """htsec's own execution point (``htsec serve``) as one host named after this machine.

    Idle and running jobs are read from the store's ``job_procs`` table; the host's mode is a
    small JSON file in the state directory (``local-mode.json``), which is what a switch writes.
    Note: the execution point does not (yet) read that file -- this driver records and reports
    the decision for the embedded default; it does not stop local jobs from starting.
    """

    def __init__(self, store: Store, state_dir: Path, name: str | None = None) -> None:
        self.store = store
        self.file = state_dir / "local-mode.json"
        self.name = name or os.uname().nodename

    def _mode(self) -> tuple[Mode, Mode | None]:
        try:
            raw = json.loads(self.file.read_text())
            return Mode(raw["mode"]), (Mode(raw["target"]) if raw.get("target") else None)
        except FileNotFoundError:
            return Mode.REGULAR, None
        except (OSError, ValueError, KeyError, TypeError):
            return Mode.BROKEN, None

    def observe(self) -> Snapshot:
        try:
            with self.store.session() as s:
                rows = dict(
                    s.execute(select(JobProc.state, func.count()).group_by(JobProc.state)).all()
                )
        except SQLAlchemyError as exc:
            return Snapshot([], None, False, [f"job table unreadable: {exc.__class__.__name__}"])
        mode, target = self._mode()
        busy = int(rows.get("running", 0)) > 0
        host = Host(self.name, mode, busy, True, target)
        return Snapshot([host], int(rows.get("idle", 0)))

    def apply(self, action: Action, host: Host) -> None:
        new = result_mode(action, host)
        target = None
        if new is Mode.DRAINING:
            target = Mode.REGULAR if host.mode is Mode.FLOCKING else Mode.FLOCKING
        body = {"mode": new.value, "target": target.value if target else None}
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.file, json.dumps(body).encode(), 0o644)
        except OSError as exc:
            raise SwitchFailed(f"{host.name}: cannot write {self.file}: {exc.strerror}") from None
