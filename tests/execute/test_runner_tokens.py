"""htsec.execute.runner with htsec.execute.creds: a job sees its tokens in $_CONDOR_CREDS
before it starts; a job whose credential is missing is held with HTCondor's reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.execute.conftest import Point

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as slot accounts: needs root")


def test_a_job_finds_its_access_token_in_condor_creds_before_it_starts(
    point: Point, iwd: Path
) -> None:
    r = point.call(
        "PUT",
        "/v1/creds/box",
        params={"handle": "work"},
        json={"access_token": "at-for-the-job", "expires_in": 3600},
    )
    assert r.status_code == 200, r.text
    (iwd / "job.sh").write_text(
        '#!/bin/sh\necho "$_CONDOR_CREDS"; stat -c "%a %U" "$_CONDOR_CREDS" '
        '"$_CONDOR_CREDS/box_work.use"; cat "$_CONDOR_CREDS/box_work.use"\n'
    )
    (iwd / "job.sh").chmod(0o755)
    cluster = point.submit(
        "executable = job.sh\nuse_oauth_services = box\nbox_oauth_permissions_work =\n"
        "output = out\nqueue\n",
        iwd,
    )
    job = point.wait(f"{cluster}.0", "completed", "held")
    assert job["state"] == "completed", job
    where, dir_mode, file_mode, use = (iwd / "out").read_text().splitlines()
    assert where.endswith("/.condor_creds")
    assert dir_mode == file_mode.replace("600", "700") == "700 htsec-slot1"
    assert json.loads(use)["access_token"] == "at-for-the-job"
    assert "refresh_token" not in use
    assert not Path(where).exists()


def test_a_job_whose_credential_is_missing_is_held_with_htcondors_reason(
    point: Point, iwd: Path
) -> None:
    cluster = point.submit(
        "executable = /bin/true\ntransfer_executable = false\nuse_oauth_services = box\nqueue\n",
        iwd,
    )
    job = point.wait(f"{cluster}.0", "held")
    assert job["hold_reason"].startswith("Job credentials are not available")
    assert job["hold_code"] == 4
