"""htsec.execute.transfer: the default plugins are htsec's own of ``LIBEXEC`` (``scripts/setup``
installs them there as root, in a venv of a system Python), so the job user can run them even
when the clone's ``.venv`` is out of its reach (a clone in 0700 ``/root``); and ``htsec serve``
says at start, in its log, which configured plugin the job user cannot run.

The unreachable clone is simulated: a 0700 root directory holding a venv-like ``bin`` whose
``htsec-plugin-https`` is the clone's own script with its interpreter inside that directory."""

from __future__ import annotations

import os
import pwd
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from htsec.config import load
from htsec.execute.transfer import LIBEXEC, Plugins
from tests.execute.conftest import Point

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as slot accounts: needs root")


@pytest.fixture
def job_user() -> tuple[str, tuple[int, int]]:
    pw = pwd.getpwnam("htsec-slot1")
    return "htsec-slot1", (pw.pw_uid, pw.pw_gid)


@pytest.fixture
def hidden_clone() -> Iterator[Path]:
    """``<0700 dir>/.venv/bin`` with the clone's ``htsec-plugin-https``, run by a Python there."""
    top = Path(tempfile.mkdtemp(prefix="htsec-clone-", dir="/tmp"))
    top.chmod(0o700)
    bindir = top / ".venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").symlink_to(os.path.realpath(sys.executable))
    script = (Path(sys.executable).parent / "htsec-plugin-https").read_text().splitlines()
    script[0] = f"#!{bindir / 'python'}"
    (bindir / "htsec-plugin-https").write_text("\n".join(script) + "\n")
    (bindir / "htsec-plugin-https").chmod(0o755)
    yield bindir
    shutil.rmtree(top, ignore_errors=True)


def test_default_plugins_are_libexecs_and_run_as_the_job_user_beside_a_hidden_clone(
    hidden_clone: Path, job_user: tuple[str, tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (LIBEXEC / "htsec-plugin-https").exists(), "scripts/setup (as root) installs them"
    monkeypatch.delenv("_CONDOR_FILETRANSFER_PLUGINS", raising=False)
    load()  # HTCondor's configuration read again: an earlier test's knob is gone
    plugins = Plugins.configured(beside=hidden_clone)
    assert str(LIBEXEC / "htsec-plugin-https") in plugins
    assert str(hidden_clone / "htsec-plugin-https") not in plugins
    assert Plugins(plugins).check_runnable(*job_user) == []  # -classad succeeds as htsec-slot1
    # the clone's own plugin is out of htsec-slot1's reach: what the default avoids
    assert Plugins([str(hidden_clone / "htsec-plugin-https")]).check_runnable(*job_user)


def test_serve_logs_at_start_a_plugin_the_job_user_cannot_run(
    point: Point, hidden_clone: Path
) -> None:
    point.stop()
    exe = hidden_clone / "htsec-plugin-https"
    point.env["_CONDOR_FILETRANSFER_PLUGINS"] = str(exe)
    point.start()
    want = (
        f"file-transfer plugin {exe} cannot be run by the job user htsec-slot1 "
        "(Permission denied)"
    )
    deadline = time.monotonic() + 20
    while want not in point.logs[-1].read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = point.logs[-1].read_text()
    assert want in text, text[-3000:]
    assert "Run scripts/setup as root" in text
