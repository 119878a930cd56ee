"""``htsec config`` and the configuration every command reads: CONDOR_CONFIG, overrides,
config.d, the built-in home, bad knobs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.conftest import run


def test_missing_condor_config(tmp_path: Path) -> None:
    r = run("config", "show", env={"CONDOR_CONFIG": str(tmp_path / "nope")})
    assert r.code == 2
    assert "CONDOR_CONFIG" in r.err and "nope" in r.err and "Traceback" not in r.err


def test_bad_trust_domain(home: Path) -> None:
    r = run("token", "create", "-i", "a@b", env={"_CONDOR_TRUST_DOMAIN": "two words"})
    assert r.code == 2 and "TRUST_DOMAIN" in r.err


def test_config_show_overrides_and_config_d(tmp_path: Path) -> None:
    cfg = tmp_path / "condor_config"
    d = tmp_path / "config.d"
    d.mkdir()
    cfg.write_text(
        f"ROOT = {tmp_path}\nSEC_PASSWORD_DIRECTORY = $(ROOT)/pw\nLOCAL_CONFIG_DIR = {d}\n"
    )
    (d / "10-td").write_text("TRUST_DOMAIN = from.config.d\n")
    env: dict[str, str | None] = {"CONDOR_CONFIG": str(cfg), "_CONDOR_TRUST_DOMAIN": None}
    r = run("config", "show", "TRUST_DOMAIN", "SEC_PASSWORD_DIRECTORY", "--json", env=env)
    assert r.code == 0, r.err
    values = json.loads(r.out)["values"]
    assert values == {"TRUST_DOMAIN": "from.config.d", "SEC_PASSWORD_DIRECTORY": f"{tmp_path}/pw"}
    env["_CONDOR_TRUST_DOMAIN"] = "from.env"
    assert "TRUST_DOMAIN = from.env" in run("config", "show", "TRUST_DOMAIN", env=env).out


def test_builtin_home_created_private(home: Path) -> None:
    r = run("config", "show")
    assert r.code == 0
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert (home / "condor_config").is_file()
    assert "htsec built-in" in r.err
