"""htsec.config and the environment: ``HTSEC_<KNOB>`` sets htsec's own knobs (as the docs name
them), and any other ``HTSEC_`` variable -- a misspelt knob -- is refused, never ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from htsec.config import ENV_KNOBS, load
from htsec.errors import ConfigError
from tests.conftest import REPO, run


def test_credmon_uses_htsec_database_url_from_environment(tmp_path: Path, home: Path) -> None:
    """``HTSEC_DATABASE_URL=... htsec credmon`` (supervisor and worker) uses that store, not
    its own SQLite file in HTSEC_HOME."""
    cred_dir = tmp_path / "cred"
    cred_dir.mkdir(mode=0o2770)
    elsewhere = tmp_path / "elsewhere.db"
    r = run(
        "credmon",
        "--once",
        "--cred-dir",
        str(cred_dir),
        env={"HTSEC_DATABASE_URL": f"sqlite:///{elsewhere}"},
    )
    assert r.code == 0, r.err
    assert elsewhere.is_file()
    assert not (home / "htsec.db").exists()
    shown = run(
        "config",
        "show",
        "--value",
        "HTSEC_DATABASE_URL",
        "HTSEC_CREDMON_RATE",
        env={
            "HTSEC_DATABASE_URL": f"sqlite:///{elsewhere}",
            "HTSEC_CREDMON_RATE": "7",
        },
    )
    assert shown.out.splitlines() == [f"sqlite:///{elsewhere}", "7"], shown.err


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("HTSEC_DATABSE_URL", "did you mean HTSEC_DATABASE_URL?"),
        ("HTSEC_NO_SUCH_THING", "not an htsec knob"),
    ],
)
def test_unknown_htsec_variable_is_refused(
    tmp_path: Path, home: Path, name: str, needle: str
) -> None:
    cred_dir = tmp_path / "cred"
    cred_dir.mkdir(mode=0o2770)
    r = run("credmon", "--once", "--cred-dir", str(cred_dir), env={name: "sqlite:///x.db"})
    assert r.code == 2, (r.out, r.err)
    assert name in r.err and needle in r.err and "Traceback" not in r.err
    assert not (home / "htsec.db").exists()  # refused before anything was opened


def test_htsec_and_condor_forms_must_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTSEC_SERVER_URL", "https://a.example:9680")
    monkeypatch.setenv("_CONDOR_HTSEC_SERVER_URL", "https://b.example:9680")
    with pytest.raises(ConfigError, match="different values"):
        load()
    monkeypatch.setenv("_CONDOR_HTSEC_SERVER_URL", "https://a.example:9680")
    assert load().server_url == "https://a.example:9680"


def test_environment_is_read_not_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTSEC_GLIDEIN_LIFETIME", "600")
    before = dict(os.environ)
    assert load().glidein_lifetime == 600
    assert dict(os.environ) == before


def test_every_documented_htsec_knob_is_read_from_environment() -> None:
    """The knobs docs/configuration.md lists are exactly those HTSEC_<KNOB> may set."""
    doc = (REPO / "docs" / "configuration.md").read_text()
    documented = {
        cell.strip("` ")
        for line in doc.splitlines()
        if line.startswith("| `HTSEC_")
        for cell in [line.split("|")[1]]
    }
    assert documented == set(ENV_KNOBS), "add new HTSEC_ knobs to htsec.config.KNOBS"
