"""Jobs in the store: clusters and their procs (migration ``0007_jobs``).

A proc moves idle -> running -> completed, or to held (with a reason) or removed; the runner
is the only writer of running/completed/held, the API of idle (submit) and removed (rm).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Table,
    and_,
    delete,
    insert,
    or_,
    select,
    update,
)

from htsec.errors import NotFound, UsageError
from htsec.store.db import Store
from htsec.store.models import JobCluster, JobProc

__all__ = ["ACTIVE", "DONE", "JobBook", "ProcRow", "parse_job_id"]

_JOB_ID = re.compile(r"^(\d{1,9})(?:\.(\d{1,6}))?$")


def parse_job_id(text: str) -> tuple[int, int | None]:
    """``CLUSTER`` or ``CLUSTER.PROC`` as condor_rm takes them: (cluster, proc or None).

    :raises UsageError: anything else (the CLI checks before it builds a URL of it: ``..``
        in a path segment would reach another route).
    """
    m = _JOB_ID.match(text)
    if not m:
        raise UsageError(f"{text[:40]!r} is not a job id: CLUSTER or CLUSTER.PROC")
    return int(m.group(1)), int(m.group(2)) if m.group(2) else None


IDLE, RUNNING, COMPLETED, HELD, REMOVED = "idle", "running", "completed", "held", "removed"
#: States shown by ``htsec q``; the others are history.
ACTIVE = (IDLE, RUNNING, HELD)
DONE = (COMPLETED, REMOVED)

clusters = cast(Table, JobCluster.__table__)
procs = cast(Table, JobProc.__table__)


@dataclass(frozen=True)
class ProcRow:
    """One proc as stored."""

    cluster_id: int
    proc_id: int
    owner: str
    state: str
    hold_reason: str | None
    hold_code: int | None
    exit_code: int | None
    exit_signal: int | None
    ad: dict[str, Any]
    sandbox: str | None
    cgroup: str | None
    pid: int | None
    pid_start: int | None
    runs: int
    restarts: int
    note: str | None
    submitted_at: float
    started_at: float | None
    ended_at: float | None

    @property
    def job_id(self) -> str:
        return f"{self.cluster_id}.{self.proc_id}"

    def as_dict(self) -> dict[str, Any]:
        """What the API shows (no sandbox internals but its path)."""
        ad = self.ad
        return {
            "id": self.job_id,
            "cluster": self.cluster_id,
            "proc": self.proc_id,
            "owner": self.owner,
            "state": self.state,
            "hold_reason": self.hold_reason,
            "hold_code": self.hold_code,
            "exit_code": self.exit_code,
            "exit_signal": self.exit_signal,
            "cmd": ad.get("Cmd"),
            "args": ad.get("Arguments", []),
            "runs": self.runs,
            "restarts": self.restarts,
            "note": self.note,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
        }


def _row(r: Any) -> ProcRow:
    m = r._mapping
    return ProcRow(**{**{k: m[k] for k in m}, "ad": json.loads(m["ad"])})


class JobBook:
    """The jobs tables of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def submit(
        self,
        *,
        owner: str,
        submitter: str,
        iwd: str,
        text: str,
        expand: Callable[[int], Sequence[tuple[int, dict[str, Any]]]],
    ) -> tuple[int, int]:
        """Record a cluster; ``expand(cluster_id)`` gives its procs (raising rolls back)."""
        now = time.time()
        with self.store.session() as s:
            cluster = cast(  # type: ignore[index]
                CursorResult[Any],
                s.execute(
                    insert(clusters).values(
                        owner=owner,
                        submitter=submitter,
                        iwd=iwd,
                        submit_text=text,
                        procs=0,
                        submitted_at=now,
                    )
                ),
            ).inserted_primary_key[0]
            made = expand(int(cluster))
            s.execute(
                insert(procs),
                [
                    {
                        "cluster_id": cluster,
                        "proc_id": pid,
                        "owner": owner,
                        "state": IDLE,
                        "ad": json.dumps(ad, separators=(",", ":")),
                        "runs": 0,
                        "restarts": 0,
                        "submitted_at": now,
                    }
                    for pid, ad in made
                ],
            )
            s.execute(
                update(clusters).where(clusters.c.cluster_id == cluster).values(procs=len(made))
            )
        return int(cluster), len(made)

    def find(
        self,
        *,
        owner: str | None = None,
        states: Sequence[str] = ACTIVE,
        cluster: int | None = None,
        proc: int | None = None,
        limit: int | None = None,
    ) -> list[ProcRow]:
        q = select(procs).where(procs.c.state.in_(states))
        if owner is not None:
            q = q.where(procs.c.owner == owner)
        if cluster is not None:
            q = q.where(procs.c.cluster_id == cluster)
        if proc is not None:
            q = q.where(procs.c.proc_id == proc)
        order = (procs.c.cluster_id, procs.c.proc_id)
        if limit is not None:
            q = q.order_by(procs.c.ended_at.desc(), *(c.desc() for c in order)).limit(limit)
        else:
            q = q.order_by(*order)
        with self.store.session() as s:
            return [_row(r) for r in s.execute(q)]

    def get(self, cluster: int, proc: int) -> ProcRow:
        with self.store.session() as s:
            r = s.execute(
                select(procs).where(and_(procs.c.cluster_id == cluster, procs.c.proc_id == proc))
            ).first()
        if r is None:
            raise NotFound(f"no job {cluster}.{proc}")
        return _row(r)

    def claim_idle(self, limit: int) -> list[ProcRow]:
        """Up to ``limit`` idle procs, oldest first, marked running (the runner owns them)."""
        if limit <= 0:
            return []
        with self.store.session() as s:
            rows = s.execute(
                select(procs)
                .where(procs.c.state == IDLE)
                .order_by(procs.c.cluster_id, procs.c.proc_id)
                .limit(limit)
            ).all()
            now = time.time()
            claimed = []
            for r in rows:
                done = s.execute(
                    update(procs)
                    .where(
                        and_(
                            procs.c.cluster_id == r.cluster_id,
                            procs.c.proc_id == r.proc_id,
                            procs.c.state == IDLE,
                        )
                    )
                    .values(
                        state=RUNNING,
                        started_at=now,
                        runs=procs.c.runs + 1,
                        ended_at=None,
                        exit_code=None,
                        exit_signal=None,
                    )
                )
                if cast(CursorResult[Any], done).rowcount:
                    claimed.append(r)
        return [self.get(r.cluster_id, r.proc_id) for r in claimed]

    def set(
        self, cluster: int, proc: int, *, only_if: Sequence[str] | None = None, **values: Any
    ) -> bool:
        """Update one proc (when its state is one of ``only_if``); True when it was."""
        cond = and_(procs.c.cluster_id == cluster, procs.c.proc_id == proc)
        if only_if is not None:
            cond = and_(cond, procs.c.state.in_(only_if))
        with self.store.session() as s:
            res = s.execute(update(procs).where(cond).values(**values))
            return bool(cast(CursorResult[Any], res).rowcount)

    def remove(self, owner: str | None, cluster: int, proc: int | None) -> list[ProcRow]:
        """Mark the matching active procs removed; return them as they were (running ones are
        the runner's to kill)."""
        cond = and_(procs.c.cluster_id == cluster, procs.c.state.in_(ACTIVE))
        if proc is not None:
            cond = and_(cond, procs.c.proc_id == proc)
        if owner is not None:
            cond = and_(cond, procs.c.owner == owner)
        with self.store.session() as s:
            rows = [_row(r) for r in s.execute(select(procs).where(cond))]
            now = time.time()
            for r in rows:
                s.execute(
                    update(procs)
                    .where(and_(procs.c.cluster_id == r.cluster_id, procs.c.proc_id == r.proc_id))
                    .values(state=REMOVED, ended_at=now if r.state != RUNNING else None)
                )
        return rows

    def running(self) -> list[ProcRow]:
        return self.find(states=(RUNNING,))

    def forget_cluster(self, cluster: int) -> None:
        with self.store.session() as s:
            s.execute(delete(procs).where(procs.c.cluster_id == cluster))
            s.execute(delete(clusters).where(clusters.c.cluster_id == cluster))

    def exists(self, cluster: int, owner: str | None) -> bool:
        cond = procs.c.cluster_id == cluster
        if owner is not None:
            cond = and_(cond, or_(procs.c.owner == owner))
        with self.store.session() as s:
            return s.execute(select(procs.c.proc_id).where(cond).limit(1)).first() is not None
