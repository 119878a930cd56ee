"""The HTCondor driver: startd ads from the collector, the idle count from the schedds, and the
two startds of each execute host switched through their condor_master (htcondor2).

Expected configuration on each execute host (``contrib/htsec-flock.config``): two startds in
``DAEMON_LIST``, the regular one and the flocking one (``STARTD_FLOCK``, a second startd with
its own local name), each advertising ``HTSEC_FLOCK_ROLE`` ("regular" / "flocking") and
``HTSEC_FLOCK_HOST`` (the physical host) through ``STARTD_ATTRS``, and the master advertising
``HTSEC_FLOCK_HOST`` through ``MASTER_ATTRS`` (only such hosts are managed); a startd cron
health check may set ``NODE_IS_HEALTHY`` (False: the host is never lent).

A host's mode is read from its ads: only the regular startd advertising -> regular; only the
flocking one -> flocking; one of them with ``Draining`` true -> draining towards the other;
neither or both (and the master up) -> broken (a half-done switch); no master ad -> unhealthy.

Switches: lend = ``DaemonOff`` of the regular startd and ``DaemonOn`` of the flocking one (as
seed 001's condor_off/condor_on); drain = ``condor_drain -graceful`` of the startd that is on
(running jobs finish, no new ones start); cancel = ``condor_drain -cancel``; stop (override,
repair) = ``DaemonOffFast`` of the flocking startd (its jobs are evicted) and ``DaemonOn`` of the
regular one. Not tested here (no HTCondor pool can run on this machine): sending the commands
and the queries themselves; tested: reading ads (built with classad2) and the command plans.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from htsec.flock.config import CondorConfig
from htsec.flock.driver import Snapshot, SwitchFailed
from htsec.flock.policy import Action, Host, Kind, Mode

__all__ = [
    "MASTER_PROJECTION",
    "STARTD_PROJECTION",
    "Command",
    "CondorDriver",
    "hosts_from_ads",
    "idle_from_schedds",
    "idle_from_summary",
    "plan",
]

log = logging.getLogger("htsec.flock")

ROLE = "HTSEC_FLOCK_ROLE"
PHYS = "HTSEC_FLOCK_HOST"
STARTD_PROJECTION = [
    # MyAddress and MyType: htcondor2.Startd(ad) and send_command need them to reach the daemon
    "MyAddress", "MyType", "Name", "Machine", "State", "Activity", "Draining", "NODE_IS_HEALTHY",
    ROLE, PHYS,
]  # fmt: skip
MASTER_PROJECTION = ["Name", "Machine", "MyAddress", "MyType", PHYS]


@dataclass(frozen=True, slots=True)
class Command:
    """One command for one host: ``op`` is ``on``, ``off``, ``off-fast`` (to the master, for the
    startd named ``daemon`` in DAEMON_LIST), ``drain`` or ``drain-cancel`` (to that startd)."""

    op: str
    host: str
    daemon: str


def plan(action: Action, host: Host, cfg: CondorConfig) -> list[Command]:
    """The commands that carry out ``action`` (pure)."""
    reg, flk, h = cfg.regular, cfg.flocking, host.name
    k = action.kind
    if k is Kind.LEND:
        return [Command("off", h, reg), Command("on", h, flk)]
    if k is Kind.RECLAIM:
        return [Command("off", h, flk), Command("on", h, reg)]
    if k is Kind.DRAIN:
        return [Command("drain", h, flk if host.mode is Mode.FLOCKING else reg)]
    if k is Kind.CANCEL:
        return [Command("drain-cancel", h, reg)]
    if k is Kind.FINISH:
        if host.target is Mode.FLOCKING:
            return [Command("off", h, reg), Command("on", h, flk)]
        return [Command("off", h, flk), Command("on", h, reg)]
    assert k is Kind.STOP
    return [Command("off-fast", h, flk), Command("on", h, reg)]


def _get(ad: Mapping[str, Any], key: str) -> Any:
    try:
        return ad[key]
    except KeyError:
        return None


def _phys(ad: Mapping[str, Any]) -> str | None:
    name = _get(ad, PHYS) or _get(ad, "Machine")
    return name if isinstance(name, str) and name else None


def hosts_from_ads(
    startds: Iterable[Mapping[str, Any]], masters: Iterable[Mapping[str, Any]]
) -> tuple[list[Host], list[str]]:
    """Hosts from slot ads and master ads; the second value lists ads that could not be read
    (a non-empty list makes the snapshot incomplete)."""
    bad: list[str] = []
    up: set[str] = set()
    for m in masters:
        # only masters of managed hosts (MASTER_ATTRS publishes HTSEC_FLOCK_HOST): the central
        # manager, submit hosts and other execute hosts are neither switched nor counted
        if isinstance(p := _get(m, PHYS), str) and p:
            up.add(p)
    # per host, per role: any slot claimed? draining? healthy?
    seen: dict[str, dict[str, list[bool]]] = defaultdict(dict)
    healthy: dict[str, bool] = {}
    for ad in startds:
        role, p = _get(ad, ROLE), _phys(ad)
        if role not in ("regular", "flocking") or p is None:
            bad.append(str(_get(ad, "Name") or "an ad without Name"))
            continue
        busy = _get(ad, "State") == "Claimed"
        draining = _get(ad, "Draining") is True
        flags = seen[p].setdefault(role, [False, False])
        flags[0] |= busy
        flags[1] |= draining
        if _get(ad, "NODE_IS_HEALTHY") is False:
            healthy[p] = False
    hosts: list[Host] = []
    for p in sorted(up | set(seen)):
        roles = seen.get(p, {})
        ok = healthy.get(p, True) and p in up
        reg, flk = roles.get("regular"), roles.get("flocking")
        if reg and not flk:
            if reg[1]:
                hosts.append(Host(p, Mode.DRAINING, reg[0], ok, Mode.FLOCKING))
            else:
                hosts.append(Host(p, Mode.REGULAR, reg[0], ok))
        elif flk and not reg:
            if flk[1]:
                hosts.append(Host(p, Mode.DRAINING, flk[0], ok, Mode.REGULAR))
            else:
                hosts.append(Host(p, Mode.FLOCKING, flk[0], ok))
        else:
            busy = bool((reg and reg[0]) or (flk and flk[0]))
            hosts.append(Host(p, Mode.BROKEN, busy, ok))
    return hosts, bad


def idle_from_summary(ads: Iterable[Mapping[str, Any]]) -> int | None:
    """The idle count from a schedd's summary ad (``condor_q -totals``); None if absent."""
    for ad in ads:
        for key in ("AllusersIdle", "Idle"):
            v = _get(ad, key)
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                return v
    return None


def idle_from_schedds(
    schedds: Iterable[Mapping[str, Any]],
    summary: Callable[[Mapping[str, Any]], Iterable[Mapping[str, Any]]],
) -> tuple[int | None, list[str]]:
    """The pool's idle count: the sum over the schedds' summary ads (``summary`` queries one
    schedd). Unknown (None, with the reasons) when a schedd cannot be read or when the collector
    lists no schedd at all: an absent schedd is not an empty queue."""
    total: int | None = 0
    errors: list[str] = []
    seen = False
    for sad in schedds:
        seen = True
        try:
            n = idle_from_summary(summary(sad))
        except Exception as exc:  # htcondor2 raises HTCondorException and plain ones alike
            errors.append(f"schedd {_get(sad, 'Name')}: {exc}")
            total = None
            continue
        if n is None:
            errors.append(f"schedd {_get(sad, 'Name')}: no idle count in its summary")
            total = None
        elif total is not None:
            total += n
    if not seen:
        return None, ["no schedd ad in the collector: the idle count is unknown"]
    return total, errors


class CondorDriver:
    """The pool through htcondor2 (imported on first use: the rest of htsec does not need it)."""

    def __init__(self, cfg: CondorConfig) -> None:
        self.cfg = cfg
        self._masters: dict[str, Any] = {}
        self._startds: dict[tuple[str, str], Any] = {}

    def observe(self) -> Snapshot:
        import htcondor2

        try:
            coll = htcondor2.Collector(self.cfg.pool)
            startds = coll.query(
                htcondor2.AdType.Startd, f"{ROLE} =!= undefined", STARTD_PROJECTION
            )
            masters = coll.query(
                htcondor2.AdType.Master, f"{PHYS} =!= undefined", MASTER_PROJECTION
            )
            schedd_ads = coll.query(htcondor2.AdType.Schedd)
        except Exception as exc:  # htcondor2 raises HTCondorException and plain ones alike
            return Snapshot([], None, False, [f"collector: {exc}"])
        self._masters = {p: m for m in masters if isinstance(p := _get(m, PHYS), str) and p}
        self._startds = {(p, str(_get(a, ROLE))): a for a in startds if (p := _phys(a))}
        hosts, bad = hosts_from_ads(startds, masters)
        errors = [f"unreadable startd ad {n}" for n in bad]

        def summary(sad: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
            ads: list[Mapping[str, Any]] = htcondor2.Schedd(sad).query(
                "true", [], opts=htcondor2.QueryOpt.SummaryOnly
            )
            return ads

        idle, schedd_errors = idle_from_schedds(schedd_ads, summary)
        errors += schedd_errors
        return Snapshot(hosts, idle, not errors, errors)

    def apply(self, action: Action, host: Host) -> None:
        import htcondor2

        for cmd in plan(action, host, self.cfg):
            try:
                if cmd.op in ("drain", "drain-cancel"):
                    role = "regular" if cmd.daemon == self.cfg.regular else "flocking"
                    startd = htcondor2.Startd(self._startds[(cmd.host, role)])
                    if cmd.op == "drain":
                        startd.drainJobs(htcondor2.DrainType.Graceful, reason="htsec shepherd")
                    else:
                        startd.cancelDrainJobs()
                    continue
                dc = {
                    "on": htcondor2.DaemonCommand.DaemonOn,
                    "off": htcondor2.DaemonCommand.DaemonOff,
                    "off-fast": htcondor2.DaemonCommand.DaemonOffFast,
                }[cmd.op]
                htcondor2.send_command(self._masters[cmd.host], dc, cmd.daemon)
            except KeyError:
                raise SwitchFailed(f"{cmd.host}: no ad to send {cmd.op} {cmd.daemon} to") from None
            except Exception as exc:
                raise SwitchFailed(f"{cmd.host}: {cmd.op} {cmd.daemon} failed: {exc}") from None
