"""The runner: takes idle procs from the store and runs each as a starter would.

One thread per running proc, each on a free slot (at most one proc per slot): sandbox, tokens
(:mod:`htsec.execute.creds`), input files (the owner's, read as the owner; URLs through
plugins), the process (as the slot's own account, :mod:`htsec.execute.slots`; own session and
cgroup, limits), then output back, tokens and sandbox removed, every process the slot's account
left killed, the outcome stored. A proc found running when the runner starts (``htsec serve``
stopped under it) has what is left of it killed and runs again, or is held after
:data:`MAX_RESTARTS`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from htsec.errors import HtsecError
from htsec.execute import process, userlog
from htsec.execute.asuser import Identity
from htsec.execute.records import HELD, IDLE, REMOVED, RUNNING, JobBook, ProcRow
from htsec.execute.sandbox import Sandbox
from htsec.execute.slots import Slot, SlotUsers, kill_uid
from htsec.execute.stage import JobFailed, stage_in, stage_out
from htsec.execute.transfer import Plugins

__all__ = ["MAX_RESTARTS", "Delivery", "Runner"]

log = logging.getLogger("htsec.execute")

#: How often a proc may be cut short by ``htsec serve`` stopping before it is held instead.
MAX_RESTARTS = 3


class JobCreds(Protocol):
    @property
    def environ(self) -> Mapping[str, str]: ...

    def close(self) -> None: ...


class Delivery(Protocol):
    """What :class:`htsec.execute.creds.CredDelivery` gives the runner."""

    def install(
        self,
        sandbox: str | os.PathLike[str],
        *,
        user: str,
        needs: Iterable[str],
        uid: int | None = None,
        gid: int | None = None,
    ) -> JobCreds: ...


@dataclass
class _Running:
    row: ProcRow
    slot: Slot | None = None
    sandbox: Sandbox | None = None
    group: Path | None = None
    proc: process.Job | None = None
    removed_by: str | None = None
    stopping: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Runner:
    """Runs the store's idle procs; :meth:`start` in ``htsec serve``'s lifespan."""

    def __init__(
        self,
        book: JobBook,
        *,
        execute_dir: Path,
        slots: SlotUsers,
        owner_identity: Callable[[str], Identity],
        delivery: Delivery | None = None,
        plugins: Plugins | None = None,
        on_started: Callable[[ProcRow, float], None] | None = None,
    ) -> None:
        self.book = book
        self.execute_dir = execute_dir
        self.slots = slots
        self.owner_identity = owner_identity
        # Slots without a job; with no account for a slot, one pseudo-slot whose jobs are held.
        self._free: list[Slot | None] = list(slots.slots) if slots.slots else [None]
        self.delivery = delivery
        self.plugins = plugins or Plugins()
        self.on_started = on_started
        self.cgroups, self.cgroup_note = process.cgroup_root()
        self._running: dict[tuple[int, int], _Running] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        os.makedirs(self.execute_dir, mode=0o711, exist_ok=True)
        limited = self.cgroups is None or "not available" in self.cgroup_note
        (log.warning if limited else log.info)(
            "execute: sandboxes in %s; %s", self.execute_dir, self.cgroup_note
        )
        if self.slots.problem:
            log.error("execute: no job runs (each is held): %s", self.slots.problem)
        else:
            log.info(
                "execute: %d slots, jobs run as %s",
                len(self.slots.slots),
                ", ".join(s.user.name for s in self.slots.slots),
            )
            if os.geteuid() == 0:  # plugins run as the slots' users: say now when one cannot
                threading.Thread(
                    target=self._check_plugins, name="htsec-plugin-check", daemon=True
                ).start()
        self._sweep_slots()
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="htsec-execute", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop taking jobs; running ones are ended and will run again on the next start."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            running = list(self._running.values())
        for r in running:
            with r.lock:
                r.stopping = True
            process.kill_all(r.group, r.proc.pid if r.proc else None, self._marker(r))
        if self._thread is not None:
            self._thread.join(timeout=10)
        deadline = time.monotonic() + 10
        while self._running and time.monotonic() < deadline:
            time.sleep(0.02)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            with self._lock:
                free = len(self._free)
            if not free:
                continue
            try:
                rows = self.book.claim_idle(free)
            except Exception:  # the store may be briefly unavailable
                log.exception("execute: cannot read idle jobs")
                continue
            for row in rows:
                with self._lock:
                    r = _Running(row, slot=self._free.pop(0))
                    self._running[(row.cluster_id, row.proc_id)] = r
                threading.Thread(
                    target=self._run, args=(r,), name=f"job-{row.job_id}", daemon=True
                ).start()

    def _check_plugins(self) -> None:
        seen: set[int] = set()
        for slot in self.slots.slots:
            if slot.user.uid not in seen:
                seen.add(slot.user.uid)
                self.plugins.check_runnable(slot.user.name, (slot.user.uid, slot.user.gid))

    # -- recovery --------------------------------------------------------------------------
    def _sweep_slots(self) -> None:
        """Whatever the slots' dedicated accounts still run from before this start goes."""
        for slot in self.slots.slots:
            if slot.dedicated and (n := kill_uid(slot.user.uid)):
                log.warning("execute: killed %d leftover processes of %s", n, slot.user.name)

    def recover(self) -> None:
        """Procs the store says are running, from before this start: kill what is left of
        them, then run them again (or hold them after :data:`MAX_RESTARTS`)."""
        for row in self.book.find(states=(RUNNING, REMOVED)):
            if row.state == REMOVED and row.ended_at is not None:
                continue
            self._kill_leftovers(row)
            c, p = row.cluster_id, row.proc_id
            if row.state == REMOVED:
                self.book.set(c, p, ended_at=time.time(), pid=None)
                continue
            restarts = row.restarts + 1
            if restarts >= MAX_RESTARTS:
                reason = (
                    f"The job was running when htsec serve stopped, {restarts} times; "
                    "held rather than run again"
                )
                self.book.set(
                    c,
                    p,
                    state=HELD,
                    hold_reason=reason,
                    hold_code=1003,
                    restarts=restarts,
                    ended_at=time.time(),
                    pid=None,
                    sandbox=None,
                )
                log.warning("execute: job %s held: %s", row.job_id, reason)
                self._event(row, userlog.held(c, p, reason, 1003))
            else:
                note = "was running when htsec serve stopped; running it again"
                self.book.set(
                    c,
                    p,
                    state=IDLE,
                    restarts=restarts,
                    note=note,
                    pid=None,
                    sandbox=None,
                    started_at=None,
                )
                log.warning("execute: job %s %s", row.job_id, note)
                self._event(row, userlog.evicted(c, p))

    def _kill_leftovers(self, row: ProcRow) -> None:
        group = Path(row.cgroup) if row.cgroup else None
        pid = row.pid if row.pid and process.pid_start(row.pid) == row.pid_start else None
        marker = Path(row.sandbox).name if row.sandbox else None
        if marker:
            process.kill_all(group, pid, marker)
        elif group is not None:
            process.kill_group(group)
        if row.sandbox and Path(row.sandbox).parent == self.execute_dir:
            Sandbox(Path(row.sandbox), 0, 0).remove()

    # -- removal ---------------------------------------------------------------------------
    def remove(self, cluster: int, proc: int, who: str) -> None:
        """A proc was marked removed: end it if it runs (the API marked it in the store)."""
        with self._lock:
            r = self._running.get((cluster, proc))
        if r is None:
            return
        with r.lock:
            r.removed_by = who
            pid = r.proc.pid if r.proc else None
        process.kill_all(r.group, pid, self._marker(r))

    def removed_idle(self, row: ProcRow, who: str) -> None:
        """A proc removed before it ran: its user log says so."""
        self._event(row, userlog.aborted(row.cluster_id, row.proc_id, who))

    @staticmethod
    def _marker(r: _Running) -> str:
        return r.sandbox.path.name if r.sandbox else "-"

    # -- one proc --------------------------------------------------------------------------
    def _event(self, row: ProcRow, text: str) -> None:
        path = row.ad.get("UserLog")
        if not path:
            return
        try:
            who = self.owner_identity(row.owner)
            where = path if path.startswith("/") else f"{row.ad['Iwd']}/{path}"
            if (err := userlog.write_event(who, where, text)) is not None:
                log.warning("execute: job %s: user log: %s", row.job_id, err)
        except HtsecError as exc:
            log.warning("execute: job %s: user log: %s", row.job_id, exc)

    def _hold(self, r: _Running, reason: str, code: int) -> None:
        row = r.row
        if self.book.set(
            row.cluster_id,
            row.proc_id,
            only_if=(RUNNING,),
            state=HELD,
            hold_reason=reason,
            hold_code=code,
            ended_at=time.time(),
            pid=None,
        ):
            log.info("execute: job %s held: %s", row.job_id, reason)
            self._event(row, userlog.held(row.cluster_id, row.proc_id, reason, code))

    def _run(self, r: _Running) -> None:
        row = r.row
        creds: JobCreds | None = None
        try:
            creds = self._execute(r)
        except JobFailed as exc:
            self._hold(r, str(exc), exc.code)
        except Exception as exc:  # a fault of ours: the job is held, never lost
            log.exception("execute: job %s failed", row.job_id)
            self._hold(
                r, f"The execution point failed to run the job: {exc.__class__.__name__}: {exc}", 6
            )
        finally:
            with contextlib.suppress(Exception):
                if creds is not None:
                    creds.close()
            process.kill_all(r.group, r.proc.pid if r.proc else None, self._marker(r))
            if r.sandbox is not None:
                r.sandbox.remove()
            if r.slot is not None and r.slot.dedicated:
                kill_uid(r.slot.user.uid)  # all the slot's account runs is the job's
            self._finish_removed(r)
            with self._lock:
                self._running.pop((row.cluster_id, row.proc_id), None)
                self._free.append(r.slot)
                self._free.sort(key=lambda s: s.number if s else 0)
            self._wake.set()

    def _finish_removed(self, r: _Running) -> None:
        row = r.row
        if r.stopping:
            return
        current = self.book.get(row.cluster_id, row.proc_id)
        if current.state == REMOVED and current.ended_at is None:
            self.book.set(row.cluster_id, row.proc_id, ended_at=time.time(), pid=None)
            self._event(
                row, userlog.aborted(row.cluster_id, row.proc_id, r.removed_by or row.owner)
            )

    def _execute(self, r: _Running) -> JobCreds | None:
        row = r.row
        ad = row.ad
        c, p = row.cluster_id, row.proc_id
        if r.slot is None:
            raise JobFailed(f"The execution point cannot run jobs: {self.slots.problem}", 6)
        job = r.slot.user
        if job.uid == 0:
            raise JobFailed("jobs never run as root", 6)
        owner = self.owner_identity(row.owner)
        limits = limits_of(ad)
        r.sandbox = Sandbox.create(self.execute_dir, f"dir_{c}.{p}", job.uid, job.gid)
        r.group = process.make_group(self.cgroups, r.sandbox.path.name, limits)
        self.book.set(c, p, sandbox=str(r.sandbox.path), cgroup=str(r.group) if r.group else None)
        if r.group is None and self.cgroups is None:
            log.info("execute: job %s: no cgroup (%s)", row.job_id, self.cgroup_note)
        creds: JobCreds | None = None
        env = job_environment(ad, r.sandbox.path)
        needs = [n for n in str(ad.get("OAuthServicesNeeded", "")).split(",") if n]
        if needs and self.delivery is not None:
            try:
                creds = self.delivery.install(
                    r.sandbox.path, user=row.owner, needs=needs, uid=job.uid, gid=job.gid
                )
            except HtsecError as exc:
                raise JobFailed(
                    getattr(exc, "hold_reason", None) or str(exc),
                    int(getattr(exc, "hold_code", 0) or 0),
                ) from None
            env.update(creds.environ)
        elif needs:
            raise JobFailed("Job credentials are not available (no token delivery here)", 4)
        r.sandbox.write_bytes(".job.ad", job_ad_text(ad).encode())  # fs-ok: Sandbox, O_EXCL
        argv = stage_in(
            r.sandbox, ad, owner=owner, plugins=self.plugins, env=env, run_as=(job.uid, job.gid)
        )
        r.sandbox.mark_inputs()
        with self._lock_stdio(r.sandbox, ad) as (stdin, stdout, stderr):
            if self.book.get(c, p).state != RUNNING:  # removed while it was being set up
                return creds
            with r.lock:
                if r.removed_by or r.stopping:
                    return creds
                r.proc = process.spawn(
                    argv,
                    cwd=str(r.sandbox.path),
                    env=env,
                    uid=job.uid,
                    gid=job.gid,
                    limits=limits,
                    group=r.group,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                )
        started = time.time()
        self.book.set(c, p, pid=r.proc.pid, pid_start=process.pid_start(r.proc.pid))
        if self.on_started is not None:
            self.on_started(row, started)
        self._event(row, userlog.executing(c, p))
        duration = ad.get("AllowedExecuteDuration")
        try:
            status = r.proc.wait(timeout=duration)
        except subprocess.TimeoutExpired:
            process.kill_all(r.group, r.proc.pid, self._marker(r))
            r.proc.wait()
            raise JobFailed(
                f"The job exceeded allowed execute duration of {duration}s", 47
            ) from None
        # The job is over when its main process is: what it left behind goes too.
        process.kill_all(r.group, r.proc.pid, self._marker(r))
        if r.removed_by or r.stopping:
            return creds
        exit_code, exit_signal = (None, -status) if status < 0 else (status, None)
        disk = limits.file_size
        if exit_signal == signal.SIGXFSZ:
            raise JobFailed(
                f"The job exceeded request_disk ({disk} bytes): a file reached the file-size limit",
                34,
            )
        if disk is not None and (used := r.sandbox.usage()) >= disk:
            raise JobFailed(
                f"The job exceeded request_disk ({disk} bytes): its sandbox holds {used} bytes", 34
            )
        stage_out(
            r.sandbox, ad, owner=owner, plugins=self.plugins, env=env, run_as=(job.uid, job.gid)
        )
        if self.book.set(
            c,
            p,
            only_if=(RUNNING,),
            state="completed",
            exit_code=exit_code,
            exit_signal=exit_signal,
            ended_at=time.time(),
            pid=None,
        ):
            self._event(row, userlog.terminated(c, p, exit_code, exit_signal))
        return creds

    @contextlib.contextmanager
    def _lock_stdio(self, sandbox: Sandbox, ad: dict[str, Any]) -> Any:
        fds: list[int] = []
        try:
            for name in ("_condor_stdout", "_condor_stderr"):
                sandbox.write_bytes(name, b"")  # fs-ok: Sandbox, O_EXCL
                fds.append(
                    os.open(
                        sandbox.path / name,
                        os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                    )
                )
            if sandbox.exists("_condor_stdin"):
                stdin = sandbox.open_output("_condor_stdin")
            else:
                stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            fds.append(stdin)
            yield stdin, fds[0], fds[1]
        finally:
            for fd in fds:
                os.close(fd)


def limits_of(ad: Mapping[str, Any]) -> process.Limits:
    memory = ad.get("RequestMemory")
    disk = ad.get("RequestDisk")
    duration = ad.get("AllowedExecuteDuration")
    return process.Limits(
        memory=int(memory) << 20 if memory else None,
        file_size=int(disk) << 10 if disk else None,
        cpu_seconds=int(duration) * max(1, int(ad.get("RequestCpus", 1))) if duration else None,
    )


def job_environment(ad: Mapping[str, Any], sandbox: Path) -> dict[str, str]:
    """The job's environment: the submit's ``environment`` over a starter's variables."""
    s = str(sandbox)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.update({k: str(v) for k, v in dict(ad.get("Environment") or {}).items()})
    env.update(
        {
            "HOME": s,
            "TMPDIR": s,
            "_CONDOR_SCRATCH_DIR": s,
            "_CONDOR_JOB_IWD": s,
            "_CONDOR_JOB_AD": f"{s}/.job.ad",
            "BATCH_SYSTEM": "HTCondor",
            "HTSEC_JOB_ID": sandbox.name,
        }
    )
    return env


def job_ad_text(ad: Mapping[str, Any]) -> str:
    """The job ad in old ClassAd syntax (``_CONDOR_JOB_AD``)."""
    import classad2

    flat = {
        k: (" ".join(v) if k == "Arguments" else v)
        for k, v in ad.items()
        if k != "Submit" and not isinstance(v, dict) and v is not None
    }
    flat = {k: (",".join(v) if isinstance(v, list) else v) for k, v in flat.items()}
    return str(classad2.ClassAd(flat).printOld())
