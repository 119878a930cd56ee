"""htsec shepherd run/status through the real console script, on the local driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run


def write_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "shepherd.toml"
    cfg.write_text(
        f'driver = "local"\nstate_dir = "{tmp_path / "state"}"\n'
        'override = "/run/htsec-test-none/flock.off"\n'
        f"[policy]\nreserve = 0.0\n{extra}"
    )
    return cfg


def test_shepherd_run_once_lends_the_idle_local_host_and_status_shows_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = run("shepherd", "run", "--once", "--config", str(cfg))
    assert r.code == 0, r.err
    mode = json.loads((tmp_path / "state" / "local-mode.json").read_text())
    assert mode["mode"] == "flocking"
    s = run("shepherd", "status", "--json", "--config", str(cfg))
    assert s.code == 0, s.err
    doc = json.loads(s.out)
    assert doc["idle_jobs"] == 0 and doc["last_actions"][0]["kind"] == "lend"
    t = run("shepherd", "status", "--config", str(cfg))
    assert "flocking" in t.out and "lend" in t.out and "reserve 0%" in t.out


def test_shepherd_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "lend_below = 900\nreclaim_above = 100\n")
    r = run("shepherd", "run", "--once", "--config", str(cfg))
    assert r.code != 0 and "lend_below" in r.err and "Traceback" not in r.err
    bad = tmp_path / "bad.toml"
    bad.write_text('override = "/tmp/flockoff"\n')
    r = run("shepherd", "status", "--config", str(bad))
    assert r.code != 0 and "world-writable /tmp" in r.err and "Traceback" not in r.err


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("state_dir = 5\n", "state_dir"),
        ("override = 5\n", "override"),
        ("metrics_file = []\n", "metrics_file"),
        ("[policy]\nstep = 2.5\n", "step"),
        ("[policy]\nlend_below = 10.5\n", "lend_below"),
        ("[policy]\ninterval = inf\n", "interval"),
        ("[policy]\nmin_dwell = nan\n", "min_dwell"),
        ("[htcondor]\nregular = 5\n", "regular"),
        ('[htcondor]\nflocking = "STARTD FLOCK"\n', "flocking"),
        ('[icinga]\nurl = "https://i:5665"\nuser = "u"\npassword_file = 5\n', "password_file"),
        ('[icinga]\nurl = "http://icinga.example.org:5665"\nuser = "u"\n'
         'password_file = "/etc/htsec/pw"\n', "https"),
        ('[webhook]\nurl = "http://hooks.example.org/"\ntoken_file = "/etc/t"\n', "https"),
    ],
)  # fmt: skip
def test_shepherd_config_of_the_wrong_type_or_value_is_one_clear_line(
    tmp_path: Path, toml: str, named: str
) -> None:
    """Every key is checked when the file is read: a wrong type is a ConfigError naming the
    key (not "unexpected error (TypeError)", nor a daemon that fails every cycle), and a secret
    is never sent over plain http to anything but this host."""
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    r = run("shepherd", "status", "--config", str(bad))
    assert r.code != 0, r.out
    assert named in r.err and "unexpected" not in r.err and "Traceback" not in r.err


def test_shepherd_run_once_fails_clearly_when_the_collector_is_unreachable(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "shepherd.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\noverride = "/run/htsec-test-none/flock.off"\n'
        '[htcondor]\npool = "127.0.0.1:9"\n'
    )
    r = run("shepherd", "run", "--once", "--config", str(cfg), timeout=120)
    assert r.code == 1 and "nothing lent" in r.err and "Traceback" not in r.err
    doc = json.loads(run("shepherd", "status", "--json", "--config", str(cfg)).out)
    assert doc["errors"] and doc["errors"][0].startswith("collector:")
    assert doc["last_actions"] == []
