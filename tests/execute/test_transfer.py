"""htsec.execute.transfer: URLs go to file-transfer plugins run as a starter runs them
(``-classad``; ``-infile``/``-outfile`` [``-upload``]; as the job user, in the sandbox); a
failed transfer holds the job with the plugin's TransferError.

The plugin here is a small real executable speaking HTCondor's protocol for a ``testfile``
method (it copies local paths), so the runner's side of the protocol is what is tested; the
https plugin against a real server is tests/plugins' and the end-to-end example's."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from htsec.execute.transfer import method_of
from tests.execute.conftest import Point

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as slot accounts: needs root")

PLUGIN = r"""#!/usr/bin/python3
import os, re, shutil, sys
args = sys.argv[1:]
if args == ["-classad"]:
    print('MultipleFileSupport = true\nPluginType = "FileTransfer"\nProtocolVersion = 2\n'
          'SupportedMethods = "testfile,testfail"')
    sys.exit(0)
infile, outfile = args[args.index("-infile") + 1], args[args.index("-outfile") + 1]
upload = "-upload" in args
text = open(infile).read()
out = open(outfile, "r+")
for url, local in re.findall(r'Url = "([^"]*)"; LocalFileName = "([^"]*)"', text):
    scheme, _, path = url.partition("://")
    if scheme.endswith("testfail"):
        out.write('[ TransferUrl = "%s"; TransferSuccess = false; '
                  'TransferError = "server said 403: denied by test server"; ]\n' % url)
        continue
    src, dst = (local, path) if upload else (path, local)
    shutil.copyfile(src, dst)
    out.write('[ TransferUrl = "%s"; TransferSuccess = true; TransferFileName = "%s"; ]\n'
              % (url, os.path.basename(local)))
"""


@pytest.fixture
def plugin_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="htsec-plugin-", dir="/tmp"))
    d.chmod(0o755)
    (d / "test_plugin").write_text(PLUGIN)
    (d / "test_plugin").chmod(0o755)
    job = pwd.getpwnam("htsec-slot1")
    (d / "data").mkdir()
    os.chown(d / "data", job.pw_uid, job.pw_gid)
    (d / "data" / "in.txt").write_text("from the plugin\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def plugged(point: Point, plugin_dir: Path) -> Point:
    point.stop()
    point.env["_CONDOR_FILETRANSFER_PLUGINS"] = str(plugin_dir / "test_plugin")
    point.env["_CONDOR_HTSEC_EXECUTE_SLOTS"] = "1"  # its jobs run as htsec-slot1
    point.start()
    return point


def test_the_method_is_the_schemes_suffix_after_its_last_plus_minus_or_dot() -> None:
    assert method_of("work+box://a/b") == ("work+box", "box")
    assert method_of("scitokens.read+https://h/p") == ("scitokens.read+https", "https")
    assert method_of("x-davs://h") == ("x-davs", "davs")


def test_url_inputs_and_remapped_outputs_go_through_the_plugin_as_the_job_user(
    plugged: Point, plugin_dir: Path, iwd: Path
) -> None:
    (iwd / "job.sh").write_text("#!/bin/sh\ncat in.txt > result.txt; id -un >> result.txt\n")
    (iwd / "job.sh").chmod(0o755)
    data = plugin_dir / "data"
    cluster = plugged.submit(
        f"executable = job.sh\ntransfer_input_files = work+testfile://{data}/in.txt\n"
        f'transfer_output_remaps = "result.txt = testfile://{data}/up_$(ProcId).txt"\n'
        "queue\n",
        iwd,
    )
    job = plugged.wait(f"{cluster}.0", "completed", "held")
    assert job["state"] == "completed", job
    assert (data / "up_0.txt").read_text() == "from the plugin\nhtsec-slot1\n"
    assert (data / "up_0.txt").stat().st_uid == pwd.getpwnam("htsec-slot1").pw_uid
    assert not (iwd / "result.txt").exists()


def test_a_failed_transfer_holds_the_job_with_the_plugins_transfer_error(
    plugged: Point, iwd: Path
) -> None:
    (iwd / "job.sh").write_text("#!/bin/sh\necho should not run > ran\n")
    (iwd / "job.sh").chmod(0o755)
    cluster = plugged.submit(
        "executable = job.sh\ntransfer_input_files = testfail://h/x.txt\nqueue\n", iwd
    )
    job = plugged.wait(f"{cluster}.0", "held")
    assert job["hold_code"] == 13
    assert "server said 403: denied by test server" in job["hold_reason"]
    assert "testfail://h/x.txt" in job["hold_reason"]
    assert not (iwd / "ran").exists()


def test_a_url_no_plugin_supports_holds_the_job_naming_the_scheme(
    plugged: Point, iwd: Path
) -> None:
    cluster = plugged.submit(
        "executable = /bin/true\ntransfer_executable = false\n"
        "transfer_input_files = gopher://h/x\nqueue\n",
        iwd,
    )
    job = plugged.wait(f"{cluster}.0", "held")
    assert "no file-transfer plugin supports gopher://" in job["hold_reason"]


def test_plugins_htcondors_default_names_but_this_machine_lacks_give_way_to_htsecs_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from htsec.config import load
    from htsec.execute.transfer import LIBEXEC, Plugins

    monkeypatch.setenv("_CONDOR_FILETRANSFER_PLUGINS", "/nonexistent/curl_plugin, /nonexistent/x")
    load()
    # htsec's own: those scripts/setup installs for everyone, else those beside this Python
    owns = {str(d / "htsec-plugin-https") for d in (LIBEXEC, Path(sys.executable).parent)}
    assert owns & set(Plugins.configured())
    assert "/nonexistent/curl_plugin" not in Plugins.configured()
    monkeypatch.setenv("_CONDOR_FILETRANSFER_PLUGINS", "/nonexistent/curl_plugin, /bin/true")
    load()
    assert Plugins.configured() == ["/bin/true"]
