"""The shepherd: observe, decide (htsec.flock.policy), act, record -- every ``interval`` seconds.

Each cycle writes its actions to the state file before the first command and removes each one
when it is done, so a crash mid-cycle is noticed by the next cycle (audited as
``flock-interrupted``); the host it left half-switched shows up as broken and the policy sends it
back to regular. Every action goes to the store's audit log (actor ``htsec-shepherd``) and to the
Prometheus metrics (a textfile for node_exporter when ``metrics_file`` is set).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile
from sqlalchemy.exc import SQLAlchemyError

from htsec.flock.config import ShepherdConfig
from htsec.flock.driver import Driver, SwitchFailed, result_mode
from htsec.flock.hooks import Hook
from htsec.flock.override import check_override
from htsec.flock.policy import Action, Host, Mode, Observed, decide, lent, max_lent
from htsec.flock.state import State, load_state, save_state
from htsec.store.db import Store
from htsec.store.models import AuditEntry

__all__ = ["ACTOR", "CycleResult", "FlockMetrics", "Shepherd"]

log = logging.getLogger("htsec.flock")

ACTOR = "htsec-shepherd"


class FlockMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.actions = Counter(
            "htsec_flock_actions",
            "Shepherd actions by kind and outcome",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.hosts = Gauge("htsec_flock_hosts", "Hosts by mode", ["mode"], registry=self.registry)
        self.idle = Gauge(
            "htsec_flock_idle_jobs", "Local idle jobs (-1: unknown)", registry=self.registry
        )
        self.cycles = Counter(
            "htsec_flock_cycles", "Cycles by result", ["result"], registry=self.registry
        )
        self.override = Gauge(
            "htsec_flock_override", "1 while the override file is on", registry=self.registry
        )


@dataclass(frozen=True, slots=True)
class CycleResult:
    actions: list[Action]
    failed: list[str]
    complete: bool
    interrupted: int


class Shepherd:
    def __init__(
        self,
        cfg: ShepherdConfig,
        driver: Driver,
        *,
        store: Store | None = None,
        hooks: Sequence[Hook] = (),
        metrics: FlockMetrics | None = None,
        clock: Callable[[], float] = time.time,
        root_uid: int = 0,
    ) -> None:
        self.cfg = cfg
        self.driver = driver
        self.store = store
        self.hooks = list(hooks)
        self.metrics = metrics or FlockMetrics()
        self.clock = clock
        self.root_uid = root_uid

    def _audit(self, now: float, action: str, host: str | None, outcome: str, detail: str) -> None:
        if self.store is None:
            return
        try:
            with self.store.session() as s:
                s.add(
                    AuditEntry(
                        at=now,
                        actor=ACTOR,
                        action=action[:32],
                        user=None,
                        service="flock",
                        handle=host[:255] if host else None,
                        peer=None,
                        outcome=outcome,
                        detail=detail,
                    )
                )
        except SQLAlchemyError as exc:
            log.error("shepherd: cannot write the audit log: %s", exc.__class__.__name__)

    def _with_since(self, hosts: list[Host], st: State, now: float) -> list[Host]:
        out = []
        for h in hosts:
            if st.modes.get(h.name) != h.mode.value:
                # first seen, or changed outside the shepherd: its clock starts now (a new
                # host is not held back by the dwell time)
                st.since[h.name] = now if h.name in st.modes else 0.0
                st.modes[h.name] = h.mode.value
            out.append(replace(h, since=st.since.get(h.name, 0.0)))
        return out

    def cycle(self) -> CycleResult:
        now = self.clock()
        st = load_state(self.cfg.state_dir)
        interrupted = len(st.pending)
        for p in st.pending:
            log.warning("shepherd: the last cycle stopped before %s of %s", p["kind"], p["host"])
            self._audit(now, "flock-interrupted", p["host"], "interrupted", str(p["kind"]))
        st.pending = []
        snap = self.driver.observe()
        for e in snap.errors:
            log.error("shepherd: %s (no lending this cycle)", e)
        ov = check_override(self.cfg.override, root_uid=self.root_uid)
        if ov.suspect:
            log.error("shepherd: untrusted override: %s (no lending until it is fixed)", ov.detail)
        hosts = self._with_since(snap.hosts, st, now)
        obs = Observed(hosts, snap.idle_jobs, snap.complete, ov.active, ov.suspect)
        actions = decide(obs, self.cfg.policy, now)
        by = {h.name: h for h in hosts}
        st.pending = [{"kind": a.kind.value, "host": a.host} for a in actions]
        save_state(self.cfg.state_dir, st)
        saved = time.monotonic()
        failed: list[str] = []
        switched: list[tuple[Action, Host]] = []
        for a in actions:
            h = by[a.host]
            outcome = "ok"
            try:
                self.driver.apply(a, h)
            except SwitchFailed as exc:
                outcome = "failed"
                failed.append(a.host)
                log.error("shepherd: %s of %s failed: %s", a.kind.value, a.host, exc)
            else:
                new = result_mode(a, h)
                st.modes[a.host], st.since[a.host] = new.value, now
                switched.append((a, h))
            self.metrics.actions.labels(a.kind.value, outcome).inc()
            self._audit(now, f"flock-{a.kind.value}", a.host, outcome, a.reason)
            log.info("shepherd: %s %s (%s): %s", a.kind.value, a.host, a.reason, outcome)
            st.pending.pop(0)
            st.record(
                {
                    "at": now,
                    "host": a.host,
                    "kind": a.kind.value,
                    "reason": a.reason,
                    "outcome": outcome,
                }
            )
            # At most one state write a second: an override over thousands of hosts must not
            # wait for thousands of file replacements (a crash then reports a few done actions
            # as interrupted; the hosts themselves are read from the pool, not from this list).
            if time.monotonic() - saved >= 1.0:
                save_state(self.cfg.state_dir, st)
                saved = time.monotonic()
        self._notify(switched)
        self._summarise(st, obs, now, snap.errors, ov.detail)
        save_state(self.cfg.state_dir, st)
        self.metrics.cycles.labels("complete" if snap.complete else "incomplete").inc()
        if self.cfg.metrics_file is not None:
            try:
                write_to_textfile(str(self.cfg.metrics_file), self.metrics.registry)
            except OSError as exc:
                log.error("shepherd: cannot write %s: %s", self.cfg.metrics_file, exc.strerror)
        return CycleResult(actions, failed, snap.complete, interrupted)

    def _notify(self, switched: list[tuple[Action, Host]]) -> None:
        """The monitoring hooks, once every switch of the cycle is done (a slow service never
        holds a switch back); a hook that fails is not called again this cycle (one timeout,
        not one per host: the next cycle, and the override, must not wait for it)."""
        for hook in self.hooks:
            for i, (a, h) in enumerate(switched):
                try:
                    hook.notify(a, h)
                except Exception as exc:
                    rest = len(switched) - i - 1
                    log.error(
                        "shepherd: hook %s for %s: %s (%d more not sent this cycle)",
                        type(hook).__name__, a.host, exc, rest,
                    )  # fmt: skip
                    break

    def _summarise(
        self, st: State, obs: Observed, now: float, errors: list[str], override: str
    ) -> None:
        modes = Tally(h.mode.value for h in obs.hosts)
        for m in Mode:
            self.metrics.hosts.labels(m.value).set(modes.get(m.value, 0))
        self.metrics.idle.set(-1 if obs.idle_jobs is None else obs.idle_jobs)
        self.metrics.override.set(1 if obs.override else 0)
        n = len(obs.hosts)
        hosts: list[dict[str, Any]] = [
            {
                "name": h.name,
                "mode": st.modes.get(h.name, h.mode.value),
                "busy": h.busy,
                "healthy": h.healthy,
            }
            for h in obs.hosts
        ]
        st.last_cycle = {
            "at": now,
            "idle_jobs": obs.idle_jobs,
            "complete": obs.complete,
            "errors": errors,
            "override": override,
            "override_on": obs.override,
            "hosts": hosts,
            "lent_before": lent(obs.hosts),
            "max_lent": max_lent(n, self.cfg.policy.reserve),
            "reserve": self.cfg.policy.reserve,
            "lend_below": self.cfg.policy.lend_below,
            "reclaim_above": self.cfg.policy.reclaim_above,
        }

    def run(self, stop: threading.Event, *, cycles: int | None = None) -> bool:
        """Cycle every ``interval`` seconds until ``stop`` is set (or ``cycles`` are done);
        False if the last cycle failed or could not read the whole pool."""
        done, ok = 0, True
        while not stop.is_set():
            try:
                ok = self.cycle().complete
            except Exception:
                ok = False
                self.metrics.cycles.labels("error").inc()
                log.exception("shepherd: the cycle failed; retrying next interval")
            done += 1
            if cycles is not None and done >= cycles:
                break
            stop.wait(self.cfg.policy.interval)
        return ok
