"""The htsec command as a person uses it: help, exit codes, one-line errors, no tracebacks
(the exception policy of :mod:`htsec.cli`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from htsec.cli import htsec
from tests.conftest import run

COMMANDS = [
    [],
    ["config"],
    ["config", "show"],
    ["key"],
    ["key", "create"],
    ["key", "list"],
    ["key", "rotate"],
    ["token"],
    ["token", "create"],
    ["token", "list"],
    ["token", "verify"],
    ["token", "issued"],
    ["token", "revoke"],
    ["token", "revocations"],
    ["token", "request"],
    ["token", "request", "list"],
    ["token", "request", "approve"],
    ["token", "request", "deny"],
    ["token", "request", "auto-approve"],
    ["token", "request", "collect"],
    ["glidein"],
    ["glidein", "token"],
    ["glidein", "keygen"],
    ["glidein", "unwrap"],
    ["serve"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "htsec")
def test_help_everywhere(cmd: list[str]) -> None:
    r = run(*cmd, "--help")
    assert r.code == 0, r.err
    assert "Usage: htsec" in r.out and len(r.out.splitlines()) > 3


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["token", "create", "-i", "no-at-sign"], "user@domain"),
        (["token", "create", "-i", "a@b", "--authz", "SUPERUSER"], "unknown authorization"),
        (["token", "create", "-i", "a@b", "--key", "../etc"], "bad key name"),
        (["token", "create", "-i", "a@b", "--key", "missing"], "htsec key create missing"),
        (["token", "create", "-i", "a@b", "--lifetime", "-5"], "-5"),
        (["token", "revoke"], "exactly one"),
        (["token", "revoke", "--expr", "sub =?="], "not a valid ClassAd"),
        (["token", "verify", "/nonexistent/file"], "cannot read token file"),
        (["key", "create", "POOL"], "already exists"),
    ],
)
def test_bad_input_one_line_no_traceback(home: Path, args: list[str], needle: str) -> None:
    run("key", "create", "POOL")
    r = run(*args)
    assert r.code in (1, 2), (r.code, r.err)
    assert needle in r.err
    assert "Traceback" not in r.err + r.out


def test_unexpected_error_goes_to_log(home: Path) -> None:
    """A bug prints one line and leaves the traceback in the log, not on the terminal."""
    run("key", "create", "POOL")
    # An unreadable database path is a bug-shaped failure in the store layer.
    r = run("token", "issued", env={"_CONDOR_HTSEC_DATABASE_URL": "sqlite:////proc/nope/x.db"})
    assert r.code in (1, 70)
    assert "Traceback" not in r.err


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            paths += _command_paths(sub, (*path, name))
    return paths


def test_every_command_group_module_is_wired_in() -> None:
    """Each command group lives in its own module of htsec.cli; all of them reach the group."""
    paths = {" ".join(p) for p in _command_paths(htsec)}
    assert paths >= {
        "config show",
        "key create",
        "token verify",
        "token request approve",
        "glidein unwrap",
        "cred import",
        "store rekey",
        "serve",
        "credd",
        "credmon",
        "issuer token",
    }
    runner = CliRunner()
    for path in sorted(paths):
        r = runner.invoke(htsec, [*path.split(), "--help"], prog_name="htsec")
        assert r.exit_code == 0 and r.output.startswith(f"Usage: htsec {path}".rstrip()), path


def test_python_m_htsec_cli_runs_the_command() -> None:
    """``python -m htsec.cli`` (HTSEC_TEST_CLI in tests/compat) is the htsec command."""
    r = subprocess.run(
        [sys.executable, "-m", "htsec.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0 and r.stdout.startswith("htsec, version "), (r.stdout, r.stderr)
