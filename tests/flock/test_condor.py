"""htsec.flock.condor: host modes from startd/master ads (built with classad2) and command plans.

Not tested here (no HTCondor pool can run on this machine): htcondor2's queries and
send_command/drainJobs themselves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import classad2

from htsec.flock.condor import (
    MASTER_PROJECTION,
    STARTD_PROJECTION,
    Command,
    hosts_from_ads,
    idle_from_schedds,
    idle_from_summary,
    plan,
)
from htsec.flock.config import CondorConfig
from htsec.flock.policy import Action, Host, Kind, Mode, Observed, PolicyConfig, decide


def slot(host: str, role: str, **kw: object) -> classad2.ClassAd:
    ad = {
        "Name": f"slot1@{role}-{host}",
        "Machine": host,
        "HTSEC_FLOCK_ROLE": role,
        "HTSEC_FLOCK_HOST": host,
        "State": "Unclaimed",
    }
    ad.update(kw)  # type: ignore[arg-type]
    return classad2.ClassAd(ad)


def master(host: str) -> classad2.ClassAd:
    """A managed host's master ad: MASTER_ATTRS publishes HTSEC_FLOCK_HOST (contrib config)."""
    return classad2.ClassAd({"Name": host, "Machine": host, "HTSEC_FLOCK_HOST": host})


def test_condor_ads_give_each_hosts_mode() -> None:
    startds = [
        slot("a", "regular"),
        slot("b", "flocking", State="Claimed"),
        slot("c", "regular", Draining=True, State="Claimed"),
        slot("d", "flocking", Draining=True),
        slot("e", "regular"),
        slot("e", "flocking"),
        slot("g", "regular", NODE_IS_HEALTHY=False),
    ]
    masters = [master(x) for x in "abcdefg"]
    hosts, bad = hosts_from_ads(startds, masters)
    got = {h.name: (h.mode, h.busy, h.healthy, h.target) for h in hosts}
    assert bad == []
    assert got == {
        "a": (Mode.REGULAR, False, True, None),
        "b": (Mode.FLOCKING, True, True, None),
        "c": (Mode.DRAINING, True, True, Mode.FLOCKING),
        "d": (Mode.DRAINING, False, True, Mode.REGULAR),
        "e": (Mode.BROKEN, False, True, None),  # both startds on
        "f": (Mode.BROKEN, False, True, None),  # master up, no startd: a half-done switch
        "g": (Mode.REGULAR, False, False, None),
    }


def test_condor_masters_of_hosts_it_does_not_manage_are_not_hosts() -> None:
    """Every daemon host of the pool has a master ad (central manager, submit hosts, execute
    hosts without a flocking startd). Counted as hosts, they were half-switched ones: sent
    DaemonOffFast/DaemonOn every cycle, and counted in the reserve's total, so the managed
    hosts could all be lent."""
    startds = [slot(f"p{i}", "regular") for i in range(4)]
    others = [classad2.ClassAd({"Name": x, "Machine": x}) for x in ("cm", "submit", "gpu1")]
    masters = [master(f"p{i}") for i in range(5)] + others
    hosts, bad = hosts_from_ads(startds, masters)
    assert bad == []
    assert {h.name: h.mode for h in hosts} == {
        **{f"p{i}": Mode.REGULAR for i in range(4)},
        "p4": Mode.BROKEN,  # managed, both startds off: a half-done switch
    }
    acts = decide(Observed(hosts, 0), PolicyConfig(reserve=0.5, min_dwell=0.0), 0.0)
    # 5 managed hosts, half never flock: 2 may be lent, and p4 (half-switched) counts as one
    assert [(a.kind, a.host) for a in acts] == [(Kind.STOP, "p4"), (Kind.LEND, "p0")]


def test_condor_ad_without_role_is_reported_and_startd_without_master_is_unhealthy() -> None:
    ads = [classad2.ClassAd({"Name": "slot1@x", "Machine": "x"}), slot("y", "regular")]
    hosts, bad = hosts_from_ads(ads, [])
    assert bad == ["slot1@x"]
    assert [(h.name, h.healthy) for h in hosts] == [("y", False)]


def test_condor_idle_count_from_the_schedd_summary_ad() -> None:
    assert idle_from_summary([classad2.ClassAd({"MyType": "Summary", "AllusersIdle": 42})]) == 42
    assert idle_from_summary([classad2.ClassAd({"MyType": "Summary", "Idle": 7})]) == 7
    assert idle_from_summary([classad2.ClassAd({"MyType": "Summary"})]) is None
    assert idle_from_summary([]) is None


def test_condor_idle_count_is_unknown_without_any_schedd_ad() -> None:
    """No schedd in the collector (down, its ad expired) is not an empty queue: lending on it
    would lend the whole pool while local work waits."""
    idle, errors = idle_from_schedds([], lambda sad: [])
    assert idle is None and errors == ["no schedd ad in the collector: the idle count is unknown"]


def test_condor_idle_count_sums_the_schedds_and_is_unknown_if_one_fails() -> None:
    summaries = {"s1": [classad2.ClassAd({"AllusersIdle": 5})], "s2": [{"AllusersIdle": 7}]}

    def summary(sad: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
        if sad["Name"] not in summaries:
            raise RuntimeError("connection refused")
        return summaries[sad["Name"]]

    assert idle_from_schedds([{"Name": "s1"}, {"Name": "s2"}], summary) == (12, [])
    idle, errors = idle_from_schedds([{"Name": "s1"}, {"Name": "s3"}], summary)
    assert idle is None and errors == ["schedd s3: connection refused"]


def test_condor_plans_switch_the_two_startds_as_the_seed_does() -> None:
    cfg = CondorConfig()
    reg = Host("p1", Mode.REGULAR, False)
    flk = Host("p1", Mode.FLOCKING, True)
    a = lambda k: Action(k, "p1", "r")  # noqa: E731
    assert plan(a(Kind.LEND), reg, cfg) == [
        Command("off", "p1", "STARTD"),
        Command("on", "p1", "STARTD_FLOCK"),
    ]
    assert plan(a(Kind.RECLAIM), flk, cfg) == [
        Command("off", "p1", "STARTD_FLOCK"),
        Command("on", "p1", "STARTD"),
    ]
    assert plan(a(Kind.DRAIN), flk, cfg) == [Command("drain", "p1", "STARTD_FLOCK")]
    assert plan(a(Kind.DRAIN), reg, cfg) == [Command("drain", "p1", "STARTD")]
    assert plan(a(Kind.STOP), flk, cfg)[0] == Command("off-fast", "p1", "STARTD_FLOCK")
    drained = Host("p1", Mode.DRAINING, False, target=Mode.FLOCKING)
    assert plan(a(Kind.FINISH), drained, cfg) == plan(a(Kind.LEND), reg, cfg)
    assert plan(a(Kind.CANCEL), drained, cfg) == [Command("drain-cancel", "p1", "STARTD")]


def test_condor_queries_project_what_the_commands_need() -> None:
    # htcondor2.send_command and htcondor2.Startd read MyAddress and MyType from the ad
    for proj in (STARTD_PROJECTION, MASTER_PROJECTION):
        assert {"MyAddress", "MyType"} <= set(proj)
