"""An in-memory HTCondor pool for the shepherd's tests: no HTCondor daemon can run on this
machine, so this stands in for the collector and the masters. It speaks what the HTCondor driver
speaks: it publishes slot and master ads built with classad2 (read by
htsec.flock.condor.hosts_from_ads) and carries out the driver's command plans
(htsec.flock.condor.plan) one command at a time."""

from __future__ import annotations

from dataclasses import dataclass, field

import classad2

from htsec.flock.condor import Command, hosts_from_ads, plan
from htsec.flock.config import CondorConfig
from htsec.flock.driver import Snapshot, SwitchFailed
from htsec.flock.policy import Action, Host


class Crash(BaseException):
    """Stands for the shepherd's process dying between two commands."""


@dataclass
class FakeHost:
    regular_on: bool = True
    flocking_on: bool = False
    busy: bool = False
    draining: str | None = None  # the DAEMON_LIST name of the draining startd
    healthy: bool = True
    up: bool = True


@dataclass
class FakePool:
    hosts: dict[str, FakeHost]
    idle: int | None = 0
    cfg: CondorConfig = field(default_factory=CondorConfig)
    log: list[Command] = field(default_factory=list)
    crash_after: int | None = None  # commands to carry out before a Crash
    fail_hosts: set[str] = field(default_factory=set)

    def ads(self) -> tuple[list[classad2.ClassAd], list[classad2.ClassAd]]:
        startds, masters = [], []
        for name, h in self.hosts.items():
            if not h.up:
                continue
            master = {"Name": name, "Machine": name, "MyType": "DaemonMaster"}
            masters.append(classad2.ClassAd({**master, "HTSEC_FLOCK_HOST": name}))
            for role, on, daemon in (
                ("regular", h.regular_on, self.cfg.regular),
                ("flocking", h.flocking_on, self.cfg.flocking),
            ):
                if on:
                    startds.append(
                        classad2.ClassAd(
                            {
                                "Name": f"slot1@{role}-{name}",
                                "Machine": name,
                                "HTSEC_FLOCK_ROLE": role,
                                "HTSEC_FLOCK_HOST": name,
                                "State": "Claimed" if h.busy else "Unclaimed",
                                "Draining": h.draining == daemon,
                                "NODE_IS_HEALTHY": h.healthy,
                            }
                        )
                    )
        return startds, masters

    def observe(self) -> Snapshot:
        hosts, bad = hosts_from_ads(*self.ads())
        errors = [f"bad ad {b}" for b in bad]
        if self.idle is None:
            errors.append("schedd unreachable")
        return Snapshot(hosts, self.idle, not errors, errors)

    def apply(self, action: Action, host: Host) -> None:
        if host.name in self.fail_hosts:
            raise SwitchFailed(f"{host.name}: master unreachable")
        for cmd in plan(action, host, self.cfg):
            if self.crash_after is not None:
                if self.crash_after == 0:
                    raise Crash
                self.crash_after -= 1
            self.log.append(cmd)
            h = self.hosts[cmd.host]
            attr = "regular_on" if cmd.daemon == self.cfg.regular else "flocking_on"
            if cmd.op == "on":
                setattr(h, attr, True)
                h.draining = None if h.draining == cmd.daemon else h.draining
            elif cmd.op in ("off", "off-fast"):
                setattr(h, attr, False)
                if h.draining == cmd.daemon:
                    h.draining = None
                if cmd.op == "off-fast" or not (h.regular_on or h.flocking_on):
                    h.busy = False
            elif cmd.op == "drain":
                h.draining = cmd.daemon
            elif cmd.op == "drain-cancel":
                h.draining = None
