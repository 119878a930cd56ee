"""The shepherd's decision: observed pool state and config in, a list of actions out (pure).

Seed 001's rules (FORMATS.md section 2): when the local idle queue is short, switch some
regular hosts to flocking; when it is long, switch them back; keep a reserve of hosts that never
flock; an override switches flocking off at once. What this adds:

* hysteresis: lend only below ``lend_below``, reclaim only above ``reclaim_above`` (two
  thresholds), and a host switched less than ``min_dwell`` seconds ago is not switched back;
* a step limit: at most ``step`` hosts start a switch per cycle (the override, a breached reserve
  and half-switched hosts are exempt: those only ever reduce lending);
* drain, never kill: a busy host is drained (its startd stops taking jobs; running jobs finish)
  and switched when idle; idle hosts are preferred;
* fail safe: incomplete data (no idle count, a host whose state could not be read) or an
  untrusted override means no lending at all this cycle, and hosts on their way to flocking go
  back; unhealthy hosts are never lent.

The reserve is counted on every known host: at most ``n - ceil(n * reserve)`` hosts may be lent
(flocking, draining either way, or half-switched), and new lends only fill the room left before
this cycle's repairs (a stop or cancel may fail). The override is the emergency switch: flocking
startds go off at once and flocked jobs are evicted (every other path drains).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Action",
    "Host",
    "Kind",
    "Mode",
    "Observed",
    "PolicyConfig",
    "decide",
    "lent",
    "max_lent",
]


class Mode(StrEnum):
    REGULAR = "regular"  # the regular startd is on, the flocking one off
    FLOCKING = "flocking"  # the flocking startd is on, the regular one off
    DRAINING = "draining"  # one startd drains towards ``Host.target``
    BROKEN = "broken"  # neither or both startds on: a half-done switch (a crash, a failure)


class Kind(StrEnum):
    LEND = "lend"  # idle regular host: regular startd off, flocking startd on
    RECLAIM = "reclaim"  # idle flocking host: flocking startd off, regular startd on
    DRAIN = "drain"  # busy host: its current startd stops taking jobs (target: the other mode)
    FINISH = "finish"  # a drained host: switch to its target mode
    CANCEL = "cancel"  # stop a drain towards flocking: regular startd takes jobs again
    STOP = "stop"  # override / repair: flocking startd off now (jobs evicted), regular on


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    mode: Mode
    busy: bool  # the startd that is on (or draining) runs at least one job
    healthy: bool = True
    target: Mode | None = None  # for DRAINING: REGULAR or FLOCKING
    since: float = 0.0  # when the host entered its mode (seconds, same clock as ``now``)


@dataclass(frozen=True, slots=True)
class Observed:
    hosts: Sequence[Host]
    idle_jobs: int | None  # None: the schedd(s) could not be read
    complete: bool = True  # False: some collector/schedd answer was missing or malformed
    override: bool = False  # the trusted override file exists
    override_suspect: bool = False  # an override path exists but fails the ownership checks


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    interval: float = 300.0
    lend_below: int = 600
    reclaim_above: int = 1200
    reserve: float = 0.25
    step: int = 10
    min_dwell: float = 600.0

    def __post_init__(self) -> None:
        if not 0 <= self.lend_below <= self.reclaim_above:
            raise ValueError("lend_below must be >= 0 and <= reclaim_above")
        if not 0.0 <= self.reserve <= 1.0:
            raise ValueError("reserve must be a fraction between 0 and 1")
        if self.step < 1:
            raise ValueError("step must be at least 1")
        if not 0 < self.interval <= 86400:
            raise ValueError("interval must be > 0 and at most a day (86400 seconds)")
        if not 0 <= self.min_dwell < math.inf:
            raise ValueError("min_dwell must be a finite number of seconds >= 0")


@dataclass(frozen=True, slots=True)
class Action:
    kind: Kind
    host: str
    reason: str


def _is_lent(h: Host) -> bool:
    return h.mode is not Mode.REGULAR


def _accepts_flocked(h: Host) -> bool:
    return h.mode is Mode.FLOCKING or (h.mode is Mode.DRAINING and h.target is Mode.FLOCKING)


def lent(hosts: Sequence[Host]) -> int:
    """Hosts counted against the reserve: every host not plainly regular (flocking, draining
    either way -- a host draining back still runs flocked jobs -- or half-switched)."""
    return sum(1 for h in hosts if _is_lent(h))


def max_lent(n: int, reserve: float) -> int:
    """The most hosts that may be lent out of ``n`` (the reserve never flocks)."""
    return n - math.ceil(n * reserve - 1e-9)


def _stop_all(hosts: Sequence[Host], reason: str) -> list[Action]:
    out: list[Action] = []
    for h in hosts:
        if h.mode is Mode.FLOCKING or h.mode is Mode.BROKEN:
            out.append(Action(Kind.STOP, h.name, reason))
        elif h.mode is Mode.DRAINING:
            kind = Kind.CANCEL if h.target is Mode.FLOCKING else Kind.STOP
            out.append(Action(kind, h.name, reason))
    return out


def decide(obs: Observed, cfg: PolicyConfig, now: float) -> list[Action]:
    """The actions for one cycle; at most one action per host."""
    hosts = obs.hosts
    if obs.override:
        return _stop_all(hosts, "override file present")

    out: list[Action] = []
    touched: set[str] = set()

    def add(kind: Kind, h: Host, reason: str) -> None:
        out.append(Action(kind, h.name, reason))
        touched.add(h.name)

    # Half-switched hosts go back to regular first (always safe, never counted as a step).
    cap = max_lent(len(hosts), cfg.reserve)
    n_lent = lent(hosts)
    for h in hosts:
        if h.mode is Mode.BROKEN:
            add(Kind.STOP, h, "half-switched host: back to regular")
            n_lent -= 1

    safe = obs.complete and obs.idle_jobs is not None and not obs.override_suspect

    if not safe:
        why = "override file untrusted" if obs.override_suspect else "incomplete pool data"
        for h in hosts:
            if h.name in touched:
                continue
            if h.mode is Mode.DRAINING and h.target is Mode.FLOCKING:
                add(Kind.CANCEL, h, f"{why}: no lending")
                n_lent -= 1
            elif h.mode is Mode.DRAINING and not h.busy:
                add(Kind.FINISH, h, "drained: back to regular")
                n_lent -= 1
        # Never over-lend: the reserve is restored even on partial data.
        _restore_reserve(hosts, touched, n_lent, cap, add)
        return out

    idle = obs.idle_jobs
    assert idle is not None
    lending = idle < cfg.lend_below
    reclaiming = idle > cfg.reclaim_above

    # Drained hosts finish their switch, unless the direction no longer holds.
    for h in hosts:
        if h.name in touched or h.mode is not Mode.DRAINING:
            continue
        if h.target is Mode.FLOCKING:
            if reclaiming or not h.healthy:
                add(Kind.CANCEL, h, "queue above reclaim threshold" if reclaiming else "unhealthy")
                n_lent -= 1
            elif not h.busy and n_lent <= cap:
                add(Kind.FINISH, h, "drained: now flocking")
        elif not h.busy:
            add(Kind.FINISH, h, "drained: back to regular")
            n_lent -= 1

    n_lent = _restore_reserve(hosts, touched, n_lent, cap, add)
    # New lending is counted against the hosts lent *before* this cycle's repairs: a stop or
    # cancel that fails (an unreachable master) must not have made room for a lend.
    lent_before = lent(hosts)
    if lending and lent_before < cap:
        budget = min(cfg.step, cap - lent_before)
        regular = [
            h
            for h in hosts
            if h.name not in touched
            and h.mode is Mode.REGULAR
            and h.healthy
            and now - h.since >= cfg.min_dwell
        ]
        regular.sort(key=lambda h: (h.busy, h.name))  # idle hosts first
        for h in regular[:budget]:
            if h.busy:
                add(Kind.DRAIN, h, f"idle queue {idle} < {cfg.lend_below}: drain to flock")
            else:
                add(Kind.LEND, h, f"idle queue {idle} < {cfg.lend_below}")
    elif reclaiming:
        flocking = [
            h
            for h in hosts
            if h.name not in touched and h.mode is Mode.FLOCKING and now - h.since >= cfg.min_dwell
        ]
        flocking.sort(key=lambda h: (h.busy, h.name))
        for h in flocking[: cfg.step]:
            if h.busy:
                add(Kind.DRAIN, h, f"idle queue {idle} > {cfg.reclaim_above}: drain flocked jobs")
            else:
                add(Kind.RECLAIM, h, f"idle queue {idle} > {cfg.reclaim_above}")
    return out


def _restore_reserve(
    hosts: Sequence[Host],
    touched: set[str],
    n_lent: int,
    cap: int,
    add: Callable[[Kind, Host, str], None],
) -> int:
    """If more hosts are lent than the reserve allows (config changed, hosts left the pool),
    take some back: drains towards flocking first, then idle flocking hosts, then busy ones
    (drained: they stop taking flocked jobs now and come back when their jobs end)."""
    if n_lent <= cap:
        return n_lent
    cands = [h for h in hosts if h.name not in touched and _accepts_flocked(h)]
    cands.sort(key=lambda h: (h.mode is Mode.FLOCKING, h.busy, h.name))
    excess = n_lent - cap
    for h in cands:
        if excess <= 0:
            break
        if h.mode is Mode.DRAINING:
            add(Kind.CANCEL, h, "reserve breached")
            n_lent -= 1
        elif h.busy:
            add(Kind.DRAIN, h, "reserve breached: drain flocked jobs")
        else:
            add(Kind.RECLAIM, h, "reserve breached")
            n_lent -= 1
        excess -= 1
    return n_lent
