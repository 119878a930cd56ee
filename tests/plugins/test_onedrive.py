"""htsec-plugin-onedrive against the local Microsoft Graph fake
(tests/plugins/fakes/onedrive.py): path addressing, redirected downloads, simple and session
uploads, token naming, and its faults."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.fakes._server import Fault
from tests.plugins.fakes.onedrive import OneDriveFake
from tests.plugins.fakes.run import make_sandbox, run_plugin, write_token


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[OneDriveFake]:
    fake = OneDriveFake(tmp_path / "graph").start()
    yield fake
    fake.stop()


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    return make_sandbox(tmp_path, "onedrive")


def _errors(run: object) -> list[object]:
    return [ad.get("TransferError") for ad in run.results]  # type: ignore[attr-defined]


def test_download_by_path_checks_sha1_and_keeps_the_token_off_the_redirect(
    graph: OneDriveFake, sandbox: Path
) -> None:
    graph.put_file("Documents/run #1/in.txt", b"graph bytes")
    run = run_plugin(
        "onedrive",
        sandbox,
        [("onedrive://Documents/run%20%231/in.txt", str(sandbox / "in.txt"))],
        env=graph.env(),
    )
    assert run.code == 0, _errors(run)
    assert (sandbox / "in.txt").read_bytes() == b"graph bytes"
    downloads = [s for s in graph.seen if s.port == graph.content.port]
    assert downloads and all("Authorization" not in s.headers for s in downloads)


def test_a_wrong_sha1_leaves_no_file(graph: OneDriveFake, sandbox: Path) -> None:
    item = graph.put_file("in.txt", b"graph bytes")
    item.digests["sha1"] = "0" * 40
    run = run_plugin(
        "onedrive", sandbox, [("onedrive://in.txt", str(sandbox / "in.txt"))], env=graph.env()
    )
    assert run.code == 1
    assert "SHA1" in run.results[0]["TransferError"]
    assert list(sandbox.glob("*in.txt*")) == []


def test_small_upload_creates_folders_and_replaces(graph: OneDriveFake, sandbox: Path) -> None:
    graph.tokens = {"token-x"}
    write_token(sandbox / ".condor_creds", "onedrive_x", "token-x")
    out = sandbox / "out.txt"
    for text in (b"first", b"second"):
        out.write_bytes(text)
        run = run_plugin(
            "onedrive",
            sandbox,
            [("x+onedrive://a/b/out.txt", str(out))],
            env=graph.env(),
            upload=True,
        )
        assert run.code == 0, _errors(run)
    assert graph.read("a/b/out.txt") == b"second"
    assert sum(1 for s in graph.seen if s.path.endswith("/children")) == 2  # a, then a/b


def test_session_upload_skips_the_bearer_and_resumes_from_next_expected_ranges(
    graph: OneDriveFake, sandbox: Path
) -> None:
    big = sandbox / "big.bin"
    big.write_bytes(os.urandom(25 * 1024 * 1024 + 11))
    graph.faults += [
        Fault(r"^PUT /upload-session/", "cut", after=5 * 1024 * 1024 + 7),
        Fault(r"^PUT /upload-session/", "status", 503, {"Retry-After": "1"}),
    ]
    run = run_plugin(
        "onedrive", sandbox, [("onedrive://big.bin", str(big))], env=graph.env(), upload=True
    )
    assert run.code == 0, _errors(run)
    assert graph.read("big.bin") == big.read_bytes()
    session = [s for s in graph.seen if s.path.startswith("/upload-session/")]
    assert all("Authorization" not in s.headers for s in session)
    assert any(s.method == "GET" for s in session)  # asked the session what it holds
    ranges = [s.headers.get("Content-Range", "") for s in session if s.method == "PUT"]
    assert any(r.startswith(f"bytes {5 * 1024 * 1024 + 7}-") for r in ranges)


def test_a_failed_session_is_cancelled_and_every_file_reported(
    graph: OneDriveFake, sandbox: Path
) -> None:
    big = sandbox / "big.bin"
    big.write_bytes(os.urandom(5 * 1024 * 1024))
    small = sandbox / "small.txt"
    small.write_bytes(b"ok")
    graph.faults.append(Fault(r"^PUT /upload-session/", "status", 400, times=10))
    run = run_plugin(
        "onedrive",
        sandbox,
        [("onedrive://big.bin", str(big)), ("onedrive://small.txt", str(small))],
        env=graph.env(),
        upload=True,
    )
    assert run.code == 1
    assert [ad["TransferSuccess"] for ad in run.results] == [False, True]
    assert "400" in run.results[0]["TransferError"]
    assert graph.sessions == {} and graph.lookup("big.bin") is None


def test_429_and_a_cut_download_recover(graph: OneDriveFake, sandbox: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    graph.put_file("in.bin", data)
    graph.faults += [
        Fault(r"^GET /v1\.0/me/drive/root:/in\.bin$", "status", 429, {"Retry-After": "1"}),
        Fault(r"^GET /d/", "cut", after=2_000_000),
        Fault(r"^GET /d/", "drop"),
    ]
    run = run_plugin(
        "onedrive", sandbox, [("onedrive://in.bin", str(sandbox / "in.bin"))], env=graph.env()
    )
    assert run.code == 0, _errors(run)
    assert (sandbox / "in.bin").read_bytes() == data


def test_a_folder_url_and_a_missing_file_are_readable_errors(
    graph: OneDriveFake, sandbox: Path
) -> None:
    graph.mkdirs("dir")
    run = run_plugin(
        "onedrive",
        sandbox,
        [("onedrive://dir", str(sandbox / "d")), ("onedrive://nope.txt", str(sandbox / "n"))],
        env=graph.env(),
    )
    assert run.code == 1
    assert "is a folder" in run.results[0]["TransferError"]
    assert "no such file" in run.results[1]["TransferError"]
