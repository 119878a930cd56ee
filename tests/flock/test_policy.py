"""htsec.flock.policy: the reserve, hysteresis, the override, fail-safe on partial data."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from htsec.flock.policy import (
    Action,
    Host,
    Kind,
    Mode,
    Observed,
    PolicyConfig,
    decide,
    lent,
    max_lent,
)

NOW = 1_000_000.0


def apply(hosts: list[Host], actions: list[Action], now: float, *, settle: bool) -> list[Host]:
    """What the drivers do with the actions; ``settle``: drained hosts' jobs end at once."""
    by = {a.host: a for a in actions}
    out = []
    for h in hosts:
        a = by.get(h.name)
        if a is None:
            nh = h
        elif a.kind in (Kind.RECLAIM, Kind.CANCEL, Kind.STOP):
            nh = Host(h.name, Mode.REGULAR, h.busy, h.healthy, None, now)
        elif a.kind is Kind.LEND:
            nh = Host(h.name, Mode.FLOCKING, False, h.healthy, None, now)
        elif a.kind is Kind.DRAIN:
            other = Mode.REGULAR if h.mode is Mode.FLOCKING else Mode.FLOCKING
            nh = Host(h.name, Mode.DRAINING, h.busy, h.healthy, other, now)
        else:
            assert a.kind is Kind.FINISH and h.target is not None
            nh = Host(h.name, h.target, False, h.healthy, None, now)
        if settle and nh.mode is Mode.DRAINING:
            nh = replace(nh, busy=False)
        out.append(nh)
    return out


modes = st.sampled_from([Mode.REGULAR, Mode.REGULAR, *Mode])  # lending needs regular hosts


@st.composite
def host(draw: st.DrawFn, i: int) -> Host:
    mode = draw(modes)
    target = draw(st.sampled_from([Mode.REGULAR, Mode.FLOCKING])) if mode is Mode.DRAINING else None
    since = NOW - draw(st.sampled_from([0.0, 100.0, 10_000.0]))
    healthy = draw(st.sampled_from([True, True, False]))
    return Host(f"h{i:03d}", mode, draw(st.booleans()), healthy, target, since)


@st.composite
def pools(draw: st.DrawFn) -> list[Host]:
    n = draw(st.integers(0, 40))
    return [draw(host(i)) for i in range(n)]


configs = st.builds(
    PolicyConfig,
    lend_below=st.integers(0, 1000),
    reclaim_above=st.just(1000) | st.integers(1000, 3000),
    reserve=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.99, 1.0]),
    step=st.integers(1, 15),
    min_dwell=st.sampled_from([0.0, 600.0]),
)
idle_counts = st.none() | st.integers(0, 5000)


@pytest.mark.slow  # 400 examples: ~10 s on a 2-core machine
@settings(max_examples=400, deadline=None)
@given(
    pools(), configs, idle_counts, st.booleans(), st.booleans(), st.integers(1, 6),
    st.frozensets(st.integers(0, 39), max_size=8),
)  # fmt: skip
@example(
    [Host(f"h{i}", Mode.REGULAR, False) for i in range(10)],
    PolicyConfig(reserve=0.25, step=10, min_dwell=0.0),
    0, True, False, 1, frozenset(),
)  # fmt: skip
@example(
    [Host("h0", Mode.BROKEN, True)] + [Host(f"h{i}", Mode.REGULAR, False) for i in (1, 2, 3)],
    PolicyConfig(reserve=0.25, step=10, min_dwell=0.0),
    0, True, False, 1, frozenset({0}),
)  # fmt: skip
def test_policy_never_breaches_the_reserve(
    hosts: list[Host],
    cfg: PolicyConfig,
    idle: int | None,
    complete: bool,
    suspect: bool,
    cycles: int,
    failing: frozenset[int],
) -> None:
    """Checked without the policy's own arithmetic (``max_lent``/``lent``): after each cycle at
    least ``reserve * n`` hosts are plainly regular, in exact fractions; a pool that was already
    short of its reserve does not lose regular hosts. Hosts in ``failing`` fail every switch
    (an unreachable master): a repair that fails must not have made room for a lend."""
    needed = len(hosts) * Fraction(repr(cfg.reserve))
    now = NOW
    for _ in range(cycles):
        obs = Observed(hosts, idle, complete=complete, override_suspect=suspect)
        acts = decide(obs, cfg, now)
        assert len({a.host for a in acts}) == len(acts), "one action per host"
        done = [a for a in acts if int(a.host[1:]) not in failing]
        after = apply(hosts, done, now, settle=True)
        regular_before = sum(1 for h in hosts if h.mode is Mode.REGULAR)
        regular_after = sum(1 for h in after if h.mode is Mode.REGULAR)
        assert regular_after >= min(needed, regular_before)
        hosts, now = after, now + cfg.interval


@settings(max_examples=300, deadline=None)
@given(pools(), configs, st.integers(0, 5000), st.integers(2, 12))
def test_policy_does_not_flap_under_steady_load(
    hosts: list[Host], cfg: PolicyConfig, idle: int, cycles: int
) -> None:
    """With a constant queue no host is switched one way and later the other way. Half-switched
    hosts and a breached reserve are repaired in a first cycle; FINISH completes a switch started
    before (counted when it was started), so only the starts of switches are counted."""
    now = NOW
    hosts = apply(hosts, decide(Observed(hosts, idle), cfg, now), now, settle=True)
    direction: set[str] = set()
    for _ in range(cycles):
        now += cfg.interval
        acts = decide(Observed(hosts, idle), cfg, now)
        for a in acts:
            if a.kind is Kind.FINISH:
                continue
            if a.kind in (Kind.LEND, Kind.DRAIN):
                h = next(x for x in hosts if x.name == a.host)
                towards = (
                    "flock"
                    if (a.kind is Kind.LEND) or (a.kind is Kind.DRAIN and h.mode is Mode.REGULAR)
                    else "back"
                )
            else:
                towards = "back"
            direction.add(towards)
        hosts = apply(hosts, acts, now, settle=True)
    assert len(direction) <= 1, f"flapped: {direction}"
    assert lent(hosts) <= max_lent(len(hosts), cfg.reserve)


@settings(max_examples=300, deadline=None)
@given(pools(), configs, idle_counts, st.booleans(), st.booleans())
def test_policy_override_always_wins(
    hosts: list[Host], cfg: PolicyConfig, idle: int | None, complete: bool, suspect: bool
) -> None:
    obs = Observed(hosts, idle, complete=complete, override=True, override_suspect=suspect)
    acts = decide(obs, cfg, NOW)
    assert all(a.kind in (Kind.STOP, Kind.CANCEL) for a in acts)
    after = apply(hosts, acts, NOW, settle=False)
    assert all(h.mode is Mode.REGULAR or h.target is Mode.REGULAR for h in after)
    assert not any(h.mode is Mode.FLOCKING for h in after)


@settings(max_examples=300, deadline=None)
@given(pools(), configs, idle_counts, st.booleans())
def test_policy_never_lends_on_partial_data(
    hosts: list[Host], cfg: PolicyConfig, idle: int | None, suspect: bool
) -> None:
    complete = idle is not None and not suspect
    obs = Observed(hosts, idle, complete=complete and bool(hosts) and hosts[0].healthy)
    obs = replace(obs, override_suspect=suspect)
    if obs.complete and obs.idle_jobs is not None and not obs.override_suspect:
        return
    acts = decide(obs, cfg, NOW)
    assert not any(
        a.kind in (Kind.LEND, Kind.DRAIN) for a in acts if _host(hosts, a).mode is Mode.REGULAR
    )
    assert not any(a.kind is Kind.FINISH and _host(hosts, a).target is Mode.FLOCKING for a in acts)
    after = apply(hosts, acts, NOW, settle=False)
    assert sum(1 for h in after if h.mode is Mode.FLOCKING) <= sum(
        1 for h in hosts if h.mode is Mode.FLOCKING
    )


def _host(hosts: list[Host], a: Action) -> Host:
    return next(h for h in hosts if h.name == a.host)


def test_policy_prefers_idle_hosts_and_keeps_the_step_limit() -> None:
    hosts = [Host(f"b{i}", Mode.REGULAR, True) for i in range(10)]
    hosts += [Host(f"i{i}", Mode.REGULAR, False) for i in range(3)]
    acts = decide(Observed(hosts, 0), PolicyConfig(step=5, reserve=0.25), NOW)
    assert [a.kind for a in acts] == [Kind.LEND] * 3 + [Kind.DRAIN] * 2
    assert {a.host for a in acts[:3]} == {"i0", "i1", "i2"}


def test_policy_seed_defaults_lend_below_600_and_keep_a_quarter() -> None:
    cfg = PolicyConfig()
    assert (cfg.interval, cfg.lend_below, cfg.reserve) == (300.0, 600, 0.25)
    hosts = [Host(f"h{i:02d}", Mode.REGULAR, False) for i in range(8)]
    now = NOW
    for _ in range(5):
        hosts = apply(hosts, decide(Observed(hosts, 599), cfg, now), now, settle=True)
        now += cfg.interval
    assert lent(hosts) == 6  # 8 hosts, 2 (25%) never flock
    assert decide(Observed(hosts, 800), cfg, now) == []  # between the thresholds: hold
    back = decide(Observed(hosts, 1201), cfg, now)
    assert {a.kind for a in back} == {Kind.RECLAIM} and len(back) == 6


def test_policy_lends_only_into_room_left_before_this_cycles_repairs() -> None:
    """A half-switched host (its flocking startd may still run flocked jobs) is stopped this
    cycle, but the stop may fail: lending counts it as lent until a later cycle sees it
    regular. 4 hosts, 25% reserve: at most 3 lent, one of them the broken host."""
    hosts = [Host("b", Mode.BROKEN, True)] + [Host(f"r{i}", Mode.REGULAR, False) for i in range(3)]
    acts = decide(Observed(hosts, 0), PolicyConfig(reserve=0.25, min_dwell=0.0), NOW)
    assert [(a.kind, a.host) for a in acts] == [
        (Kind.STOP, "b"), (Kind.LEND, "r0"), (Kind.LEND, "r1"),
    ]  # fmt: skip


def test_policy_unhealthy_hosts_are_never_lent() -> None:
    hosts = [Host("sick", Mode.REGULAR, False, healthy=False), Host("ok", Mode.REGULAR, False)]
    acts = decide(Observed(hosts, 0), PolicyConfig(reserve=0.0), NOW)
    assert [a.host for a in acts] == ["ok"]


def test_policy_recent_switches_wait_for_the_dwell_time() -> None:
    hosts = [Host("h", Mode.FLOCKING, False, since=NOW - 10)]
    assert decide(Observed(hosts, 5000), PolicyConfig(reserve=0.0), NOW) == []
    later = decide(Observed(hosts, 5000), PolicyConfig(reserve=0.0), NOW + 600)
    assert [a.kind for a in later] == [Kind.RECLAIM]


def test_policy_config_rejects_inverted_thresholds() -> None:
    with pytest.raises(ValueError, match="lend_below"):
        PolicyConfig(lend_below=700, reclaim_above=600)
