"""htsec.execute.api: submits are bounded and parsed safely; callers see and remove only their
own jobs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run
from tests.execute.conftest import Point

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="jobs run as slot accounts: needs root")


def test_a_malformed_submit_is_a_400_with_a_reason_and_queues_nothing(
    point: Point, iwd: Path
) -> None:
    text = "include command : id |\nexecutable = /bin/true\nqueue\n"
    r = point.call("POST", "/v1/jobs", json={"submit": text, "iwd": str(iwd)})
    assert r.status_code == 400, r.text
    assert "'include' is not accepted" in r.json()["detail"]
    r = point.call(
        "POST",
        "/v1/jobs",
        json={"submit": "executable = /bin/true\n = x\nqueue\n", "iwd": str(iwd)},
    )
    assert r.status_code == 400, r.text
    assert point.call("GET", "/v1/jobs").json() == {"jobs": []}


def test_a_relative_iwd_and_an_oversized_submit_are_refused(point: Point, iwd: Path) -> None:
    r = point.call("POST", "/v1/jobs", json={"submit": "executable=/bin/true\nqueue\n", "iwd": "x"})
    assert r.status_code == 400
    big = "executable = /bin/true\n" + "# pad\n" * 20000 + "queue\n"
    r = point.call("POST", "/v1/jobs", json={"submit": big, "iwd": str(iwd)})
    assert r.status_code in (400, 413, 422)


def test_a_caller_sees_and_removes_only_their_own_jobs(point: Point, iwd: Path) -> None:
    cluster = point.submit("executable = /bin/sleep\narguments = 30\nqueue\n", iwd)
    other = run("token", "create", "--identity", "nobody@pool.example.org", env=point.env)
    assert other.code == 0, other.err
    headers = {"Authorization": f"Bearer {other.out.strip()}"}
    ca = str(point.home / "tls" / "ca.pem")
    import httpx

    listed = httpx.get(f"{point.url}/v1/jobs", headers=headers, verify=ca).json()
    assert listed == {"jobs": []}
    r = httpx.delete(f"{point.url}/v1/jobs/{cluster}", headers=headers, verify=ca)
    assert r.status_code == 404
    r = httpx.get(f"{point.url}/v1/jobs", params={"all_users": "true"}, headers=headers, verify=ca)
    assert r.status_code == 403
    assert point.call("DELETE", f"/v1/jobs/{cluster}").status_code == 200
    assert point.call("DELETE", "/v1/jobs/x.y").status_code == 400


def test_a_user_without_a_local_account_cannot_submit(point: Point, iwd: Path) -> None:
    other = run("token", "create", "--identity", "no-such-user@pool.example.org", env=point.env)
    import httpx

    r = httpx.post(
        f"{point.url}/v1/jobs",
        json={"submit": "executable = /bin/true\nqueue\n", "iwd": str(iwd)},
        headers={"Authorization": f"Bearer {other.out.strip()}"},
        verify=str(point.home / "tls" / "ca.pem"),
    )
    assert r.status_code == 403
    assert "no local account" in r.json()["detail"]
