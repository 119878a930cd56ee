"""htsec-plugin-box when Box misbehaves: 429 with Retry-After, 5xx, dropped connections,
refusals, failed upload sessions (what the three cloud plugins share: test_cloud.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.plugins.fakes._server import Fault
from tests.plugins.fakes.box import BoxFake
from tests.plugins.fakes.run import make_sandbox, run_plugin


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    return make_sandbox(tmp_path, "box")


def test_429_waits_for_retry_after_then_succeeds(box: BoxFake, sandbox: Path) -> None:
    box.put_file("in.txt", b"data")
    box.faults.append(Fault(r"^GET /2\.0/folders/0/items", "status", 429, {"Retry-After": "1"}))
    run = run_plugin("box", sandbox, [("box://in.txt", str(sandbox / "in.txt"))], env=box.env())
    assert run.code == 0, run.results
    listings = [s for s in box.seen if s.path == "/2.0/folders/0/items"]
    assert len(listings) == 2
    assert listings[1].at - listings[0].at >= 0.9  # the back-off alone would be 0.25-0.5 s
    assert run.results[0]["DeveloperData"]["TransferTries"] == 2  # the 429 is reported
    assert (sandbox / "in.txt").read_bytes() == b"data"


def test_a_retry_after_beyond_a_minute_is_left_to_htcondor(box: BoxFake, sandbox: Path) -> None:
    box.put_file("in.txt", b"data")
    box.faults.append(Fault(r"^GET /2\.0/folders/0/items", "status", 429, {"Retry-After": "3600"}))
    started = time.monotonic()
    run = run_plugin("box", sandbox, [("box://in.txt", str(sandbox / "in.txt"))], env=box.env())
    assert run.code == 1 and time.monotonic() - started < 30
    assert "asks to wait 3600 s" in run.results[0]["TransferError"]
    assert run.results[0]["TransferErrorData"][0]["Retryable"] == 3601


def test_5xx_and_a_dropped_connection_are_retried(box: BoxFake, sandbox: Path) -> None:
    box.put_file("in.txt", b"data")
    box.faults += [
        Fault(r"^GET /2\.0/files/\d+/content", "status", 503),
        Fault(r"^GET /2\.0/folders/0/items", "drop"),
    ]
    run = run_plugin("box", sandbox, [("box://in.txt", str(sandbox / "in.txt"))], env=box.env())
    assert run.code == 0, run.results
    assert (sandbox / "in.txt").read_bytes() == b"data"


def test_a_download_cut_off_resumes_with_range(box: BoxFake, sandbox: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    box.put_file("in.bin", data)
    box.faults.append(Fault(r"^GET /d/", "cut", after=1024 * 1024 + 17))
    run = run_plugin("box", sandbox, [("box://in.bin", str(sandbox / "in.bin"))], env=box.env())
    assert run.code == 0, run.results
    assert (sandbox / "in.bin").read_bytes() == data
    ranges = [s.headers.get("Range") for s in box.seen if s.path.startswith("/d/")]
    assert ranges == [None, f"bytes={1024 * 1024 + 17}-"]


def test_persistent_5xx_fails_readably_and_leaves_no_file(box: BoxFake, sandbox: Path) -> None:
    box.put_file("in.txt", b"data")
    box.faults.append(Fault(r"^GET /d/", "status", 500, times=100))
    run = run_plugin("box", sandbox, [("box://in.txt", str(sandbox / "in.txt"))], env=box.env())
    assert run.code == 1
    error = run.results[0]["TransferError"]
    assert "500" in error and "gave up after 6 tries" in error
    assert list(sandbox.glob("*in.txt*")) == []
    assert len(run.results[0]["TransferErrorData"]) == 6


@pytest.mark.parametrize(
    ("status", "words"),
    [(401, "access token was refused"), (403, "may not do this"), (404, "not found")],
)
def test_refusals_are_readable_transfer_errors(
    box: BoxFake, sandbox: Path, status: int, words: str
) -> None:
    box.put_file("in.txt", b"data")
    box.faults.append(Fault(r"^GET /2\.0/files/\d+/content", "status", status, times=100))
    started = time.monotonic()
    run = run_plugin("box", sandbox, [("box://in.txt", str(sandbox / "in.txt"))], env=box.env())
    assert run.code == 1
    error = run.results[0]["TransferError"]
    assert f"box: downloading in.txt: {status}" in error and words in error
    assert "token-1" not in error
    assert list(sandbox.glob("*in.txt*")) == []
    if status != 401:
        assert time.monotonic() - started < 5  # no retries for a refusal


def test_a_dropped_part_is_sent_again_and_the_session_commits(box: BoxFake, sandbox: Path) -> None:
    big = sandbox / "big.bin"
    big.write_bytes(os.urandom(20_000_000))
    box.faults += [
        Fault(r"^PUT /api/2\.0/files/upload_sessions/", "drop"),
        Fault(r"^PUT /api/2\.0/files/upload_sessions/", "status", 502),
    ]
    run = run_plugin("box", sandbox, [("box://big.bin", str(big))], env=box.env(), upload=True)
    assert run.code == 0, run.results
    assert box.read("big.bin") == big.read_bytes()


def test_a_failed_session_is_aborted(box: BoxFake, sandbox: Path) -> None:
    big = sandbox / "big.bin"
    big.write_bytes(os.urandom(20_000_000))
    box.faults.append(Fault(r"^PUT /api/2\.0/files/upload_sessions/", "status", 403, times=9))
    run = run_plugin("box", sandbox, [("box://big.bin", str(big))], env=box.env(), upload=True)
    assert run.code == 1
    assert "403" in run.results[0]["TransferError"]
    assert any(s.method == "DELETE" for s in box.seen)
    assert box.sessions == {} and box.lookup("big.bin") is None
