"""``htsec submit`` (htsec.cli.submit) against a real ``htsec serve``: refused with a link,
refused on a mismatch with the fixing command, queued when everything is stored (embedded
default) or ready for condor_submit (a pool's CONDOR_CONFIG); bad descriptions are one clear
line, never a traceback.

The link's shape is condor_submit's (``submit.cpp``: ``"\\nHellow, %s.\\nPlease visit:
%s\\n\\n"``, exit 1), without HTCondor's typo.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HTSEC, Result, run, serving

pytestmark = pytest.mark.slow

BOX = "executable = /bin/true\ntransfer_executable = false\nuse_oauth_services = box\n"


def submit(cwd: Path, env: dict[str, str], *args: str) -> Result:
    """``htsec submit ARGS`` run in ``cwd`` (the jobs' directory, as condor_submit's)."""
    proc = subprocess.run(
        [HTSEC, "submit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **env},
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def pool(home: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A real ``htsec serve`` (with its execution point) and root's token in the token
    directory, as a user of the embedded default has it (jobs run for a local account: the
    execute tests use root too)."""
    execute = tmp_path / "execute"
    with serving(home, {"_CONDOR_EXECUTE": str(execute)}) as env:
        r = run("token", "create", "-i", "root@pool.example.org", "--token", "root", env=env)
        assert r.code == 0, r.err
        yield env


def store_box(env: dict[str, str], tmp_path: Path, scopes: str) -> None:
    rt = tmp_path / "rt.txt"
    rt.write_text("refresh-SECRET")
    rt.chmod(0o600)
    r = run(
        "cred",
        "add",
        "--service",
        "box",
        "--scopes",
        scopes,
        "--refresh-token-file",
        str(rt),
        env=env,
    )
    assert r.code == 0, r.err


def test_submit_missing_credential_prints_link_and_queues_nothing(
    pool: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "job.sub").write_text(BOX + "queue\n")
    r = submit(tmp_path, pool, "job.sub")
    assert r.code == 1, r.err
    assert re.fullmatch(
        r"\nHello, root\.\nPlease visit: https://127\.0\.0\.1:\d+/key/[0-9a-f]{64}\n\n", r.out
    ), r.out
    j = submit(tmp_path, pool, "job.sub", "--json")
    assert j.code == 1
    body = json.loads(j.out)
    assert body["state"] == "login" and body["url"].rsplit("/", 1)[1] != r.out.strip()[-64:]
    assert [n["state"] for n in body["needs"]] == ["missing"]
    jobs = run("q", "--json", env=pool)
    assert jobs.code == 0, jobs.err
    assert json.loads(jobs.out)["jobs"] == []


def test_submit_mismatch_names_stored_and_wanted_and_the_fix(
    pool: dict[str, str], tmp_path: Path
) -> None:
    store_box(pool, tmp_path, "b,a")
    (tmp_path / "job.sub").write_text(BOX + "box_oauth_permissions = a\nqueue\n")
    r = submit(tmp_path, pool, "job.sub")
    assert r.code == 1 and r.out == ""
    assert "credentials exist that do not match the request" in r.err
    assert "stored with scopes a,b" in r.err and "asks for scopes a " in r.err
    assert "  htsec cred delete --service box\n" in r.err
    j = json.loads(submit(tmp_path, pool, "job.sub", "--json").out)
    assert j["state"] == "mismatch" and j["fix"] == ["htsec cred delete --service box"]


@pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as htsec-job: needs root")
def test_submit_all_present_goes_to_the_execution_point(
    pool: dict[str, str], tmp_path: Path
) -> None:
    store_box(pool, tmp_path, "b,a")
    # Scopes compared as sets: "a b" is what is stored as "b,a".
    (tmp_path / "job.sub").write_text(BOX + "box_oauth_permissions = a b\nqueue 3\n")
    r = submit(tmp_path, pool, "job.sub")
    assert r.code == 0, r.err
    m = re.fullmatch(r"3 job\(s\) submitted to cluster (\d+)\.\n", r.out)
    assert m, r.out
    ids = set()
    for listing in ("q", "history"):  # queued, running or already done
        got = run(listing, "--json", env=pool)
        assert got.code == 0, got.err
        ids |= {j["id"] for j in json.loads(got.out)["jobs"]}
    assert {f"{m.group(1)}.{p}" for p in range(3)} <= ids


def test_submit_with_pool_config_prints_job_attribute_and_ready(
    pool: dict[str, str], tmp_path: Path, home: Path
) -> None:
    store_box(pool, tmp_path, "")
    (tmp_path / "job.sub").write_text(
        BOX.replace("box", "box, gdrive") + "gdrive_oauth_permissions_w =\nqueue\n"
    )
    env = {**pool, "CONDOR_CONFIG": str(home / "condor_config")}  # a pool's configuration
    r = submit(tmp_path, env, "job.sub")
    assert r.code == 1  # gdrive*w is missing: a link, still
    assert "Please visit: " in r.out
    (tmp_path / "job.sub").write_text(BOX + "queue 2\n")
    r = submit(tmp_path, env, "job.sub")
    assert r.code == 0, r.err
    assert r.out == (
        'OAuthServicesNeeded = "box"\nready: box stored for root; condor_submit job.sub can '
        "proceed\n"
    )
    assert json.loads(run("q", "--json", env=pool).out)["jobs"] == []  # nothing queued by htsec


def test_submit_bad_description_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "loop.sub").write_text("a = $(b)\nb = $(a)\nqueue\n")
    r = submit(tmp_path, {}, "loop.sub")
    assert r.code == 1 and "Traceback" not in r.err
    assert r.err == (
        "htsec: error: macro $(a) -> $(b) -> $(a) refers to itself: HTCondor's expansion of it "
        "would never end\n"
    )
    r = submit(tmp_path, {}, "absent.sub")
    assert r.code == 1 and "cannot read absent.sub" in r.err
    (tmp_path / "req.sub").write_text(BOX + "queue\n")
    r = submit(tmp_path, {"_CONDOR_BOX_USER_DEFINE_SCOPES": "REQUIRED"}, "req.sub")
    assert r.code == 1
    assert r.err == (
        "htsec: error: You must specify box_OAUTH_PERMISSIONS to use OAuth service box.\n"
    )
