"""htsec.flock.daemon: cycles against a pool, the audit log, metrics, crash recovery."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from htsec.errors import ConfigError
from htsec.flock.config import ShepherdConfig
from htsec.flock.daemon import Shepherd
from htsec.flock.policy import Action, Host, Kind, PolicyConfig
from htsec.flock.state import load_state
from htsec.store import Store, open_store
from htsec.store.models import AuditEntry
from tests.flock.pool_fake import Crash, FakeHost, FakePool


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'db' / 'htsec.sqlite'}")
    yield s
    s.close()


def config(tmp_path: Path, **policy: float) -> ShepherdConfig:
    return ShepherdConfig(
        state_dir=tmp_path / "state",
        override=Path("/run/htsec-test-none/flock.off"),
        metrics_file=tmp_path / "shepherd.prom",
        policy=PolicyConfig(**policy),  # type: ignore[arg-type]
    )


def pool(n: int, idle: int | None = 0) -> FakePool:
    return FakePool({f"h{i:02d}": FakeHost() for i in range(n)}, idle)


def audit(db: Store) -> list[tuple[str, str | None, str]]:
    with db.session() as s:
        rows = s.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars().all()
        return [(r.action, r.handle, r.outcome) for r in rows if r.actor == "htsec-shepherd"]


def test_shepherd_lends_up_to_the_reserve_and_audits_every_action(
    tmp_path: Path, db: Store
) -> None:
    p = pool(8)
    clock = iter(range(10**6, 10**6 + 10_000, 300))
    sh = Shepherd(config(tmp_path, step=4), p, store=db, clock=lambda: float(next(clock)))
    sh.cycle()
    sh.cycle()
    assert sum(h.flocking_on and not h.regular_on for h in p.hosts.values()) == 6
    rows = audit(db)
    assert [r[0] for r in rows] == ["flock-lend"] * 6 and all(r[2] == "ok" for r in rows)
    prom = (tmp_path / "shepherd.prom").read_text()
    assert 'htsec_flock_actions_total{kind="lend",outcome="ok"} 6.0' in prom
    assert 'htsec_flock_hosts{mode="regular"} 4.0' in prom  # before the second cycle's lends


def test_shepherd_crash_mid_switch_is_noticed_and_reverted_next_cycle(
    tmp_path: Path, db: Store
) -> None:
    p = pool(4)
    p.crash_after = 1  # the regular startd of the first host goes off, then the process dies
    cfg = config(tmp_path)
    with pytest.raises(Crash):
        Shepherd(cfg, p, store=db, clock=lambda: 1e6).cycle()
    h0 = p.hosts["h00"]
    assert not h0.regular_on and not h0.flocking_on  # half-switched
    assert load_state(cfg.state_dir).pending[0] == {"kind": "lend", "host": "h00"}
    p.crash_after = None
    p.idle = 5000  # whatever the queue, the broken host goes back to regular
    res = Shepherd(cfg, p, store=db, clock=lambda: 1e6 + 300).cycle()
    assert res.interrupted == 3
    assert h0.regular_on and not h0.flocking_on
    assert ("flock-interrupted", "h00", "interrupted") in audit(db)
    assert ("flock-stop", "h00", "ok") in audit(db)
    assert load_state(cfg.state_dir).pending == []


def test_shepherd_lends_nothing_when_the_schedd_is_unreachable(tmp_path: Path, db: Store) -> None:
    p = pool(4, idle=None)
    res = Shepherd(config(tmp_path), p, store=db).cycle()
    assert res.actions == [] and not res.complete
    st = load_state(tmp_path / "state")
    assert st.last_cycle["errors"] == ["schedd unreachable"]


def test_shepherd_failed_switch_is_audited_and_others_go_on(tmp_path: Path, db: Store) -> None:
    p = pool(4)
    p.fail_hosts = {"h00"}
    res = Shepherd(config(tmp_path, reserve=0.0), p, store=db).cycle()
    assert res.failed == ["h00"]
    assert ("flock-lend", "h00", "failed") in audit(db)
    assert p.hosts["h01"].flocking_on and p.hosts["h00"].regular_on


def test_shepherd_drains_busy_hosts_and_finishes_when_idle(tmp_path: Path, db: Store) -> None:
    p = pool(1)
    p.hosts["h00"].busy = True
    clock = iter([1e6, 1e6 + 300, 1e6 + 600])
    sh = Shepherd(config(tmp_path, reserve=0.0), p, store=db, clock=lambda: next(clock))
    assert [a.kind for a in sh.cycle().actions] == [Kind.DRAIN]
    assert p.hosts["h00"].regular_on and p.hosts["h00"].draining == "STARTD"
    assert sh.cycle().actions == []  # still busy: nothing killed
    p.hosts["h00"].busy = False
    assert [a.kind for a in sh.cycle().actions] == [Kind.FINISH]
    assert p.hosts["h00"].flocking_on and not p.hosts["h00"].regular_on


class SlowHook:
    """A monitoring hook (the Hook interface itself, not a stand-in for a service) that notes
    how many hosts still flock when it is called, and can fail like an unreachable Icinga."""

    def __init__(self, pool: FakePool, fail: bool = False) -> None:
        self.pool, self.fail, self.calls = pool, fail, []  # type: list[int]

    def notify(self, action: Action, host: Host) -> None:
        self.calls.append(sum(h.flocking_on for h in self.pool.hosts.values()))
        if self.fail:
            raise httpx.ConnectTimeout("timed out")


def test_shepherd_switches_every_host_before_calling_the_hooks(tmp_path: Path) -> None:
    """A monitoring service that answers slowly (10 s timeouts) must not hold back the switches
    after the first one: 1,000 hosts reclaimed or stopped by the override would take hours."""
    p = FakePool({f"h{i:02d}": FakeHost(False, True) for i in range(20)}, 5000)
    hook = SlowHook(p)
    cfg = config(tmp_path, reserve=0.0, step=20, min_dwell=0.0)
    res = Shepherd(cfg, p, hooks=[hook]).cycle()
    assert [a.kind for a in res.actions] == [Kind.RECLAIM] * 20
    assert hook.calls == [0] * 20  # every host already back when the first hook ran


def test_shepherd_hook_that_fails_is_not_called_again_in_the_same_cycle(tmp_path: Path) -> None:
    p = FakePool({f"h{i:02d}": FakeHost(False, True) for i in range(20)}, 5000)
    bad, good = SlowHook(p, fail=True), SlowHook(p)
    cfg = config(tmp_path, reserve=0.0, step=20, min_dwell=0.0)
    Shepherd(cfg, p, hooks=[bad, good]).cycle()
    assert len(bad.calls) == 1 and len(good.calls) == 20


def test_shepherd_state_file_is_private(tmp_path: Path) -> None:
    Shepherd(config(tmp_path), pool(2)).cycle()
    f = tmp_path / "state" / "state.json"
    assert f.stat().st_mode & 0o077 == 0
    assert json.loads(f.read_text())["last_cycle"]["idle_jobs"] == 0


@pytest.mark.parametrize(
    "text",
    [
        '{"since": {"h00": "yesterday"}}',
        '{"since": []}',
        '{"pending": [{"host": "h00"}]}',
        '{"pending": "lend"}',
        '{"last_actions": [{"host": "h00"}]}',
        '{"last_cycle": []}',
    ],
)
def test_shepherd_state_file_of_the_wrong_shape_is_a_clear_error(tmp_path: Path, text: str) -> None:
    """A hand-edited or foreign state.json is refused with a ConfigError naming the file (the
    CLI prints one line) -- not a TypeError/KeyError out of every cycle."""
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "state.json").write_text(text)
    with pytest.raises(ConfigError, match=r"state\.json"):
        load_state(tmp_path / "state")
    with pytest.raises(ConfigError, match="move it aside"):
        Shepherd(config(tmp_path), pool(2)).cycle()


def test_shepherd_override_stops_every_flocking_host_in_one_cycle(
    tmp_path: Path, db: Store
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the override must be owned by root (CI runs as root)")
    d = Path("/run") / f"htsec-test-flock-{uuid.uuid4().hex[:8]}"
    d.mkdir(mode=0o755)
    try:
        p = FakePool({f"h{i:03d}": FakeHost(False, True, busy=True) for i in range(300)}, 0)
        cfg = replace(config(tmp_path, reserve=0.0, step=1), override=d / "flock.off")
        (d / "flock.off").touch(mode=0o644)
        res = Shepherd(cfg, p, store=db).cycle()
        assert len(res.actions) == 300
        assert all(h.regular_on and not h.flocking_on for h in p.hosts.values())
        assert "htsec_flock_override 1.0" in (tmp_path / "shepherd.prom").read_text()
    finally:
        shutil.rmtree(d)
