"""htsec-plugin-onedrive against the local Microsoft Graph fake
(tests/plugins/fakes/onedrive.py): path addressing, redirected downloads, simple and session
uploads, token naming, and its faults."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import classad2
import pytest

from tests.plugins.fakes._server import Fault, Seen
from tests.plugins.fakes.onedrive import OneDriveFake
from tests.plugins.fakes.run import run_plugin, write_token


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[OneDriveFake]:
    fake = OneDriveFake(tmp_path / "graph").start()
    yield fake
    fake.stop()


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    path = tmp_path / "sandbox"
    path.mkdir()
    write_token(path / ".condor_creds", "onedrive", "token-1")
    return path


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


def test_401_until_the_use_file_is_replaced(graph: OneDriveFake, sandbox: Path) -> None:
    graph.put_file("in.txt", b"data")

    def expire(seen: Seen) -> None:
        if graph.on_request is not None:
            graph.on_request = None
            graph.tokens = {"token-2"}
            threading.Timer(
                0.5, write_token, (sandbox / ".condor_creds", "onedrive", "token-2")
            ).start()

    graph.on_request = expire
    run = run_plugin(
        "onedrive", sandbox, [("onedrive://in.txt", str(sandbox / "in.txt"))], env=graph.env()
    )
    assert run.code == 0, _errors(run)


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


@pytest.mark.slow
def test_a_256_mib_file_moves_both_ways_with_bounded_memory(
    graph: OneDriveFake, sandbox: Path
) -> None:
    big = sandbox / "big.bin"
    with big.open("wb") as f:
        f.truncate(256 * 1024 * 1024)
        f.seek(200 * 1024 * 1024)
        f.write(os.urandom(4096))
    up = run_plugin(
        "onedrive", sandbox, [("onedrive://big.bin", str(big))], env=graph.env(), upload=True
    )
    down = run_plugin(
        "onedrive", sandbox, [("onedrive://big.bin", str(sandbox / "c"))], env=graph.env()
    )
    assert up.code == down.code == 0, (_errors(up), _errors(down))
    assert (sandbox / "c").stat().st_size == big.stat().st_size
    assert up.max_rss_kib < 100 * 1024 and down.max_rss_kib < 100 * 1024


def test_classad_advertises_onedrive_without_loading_the_http_client() -> None:
    script = (
        "import sys; from htsec.plugins.onedrive import main; sys.argv[1:] = ['-classad']; "
        "code = main(); assert 'httpx' not in sys.modules; sys.exit(code)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    ad = classad2.parseOne(out.stdout, classad2.ParserType.Old)
    assert ad["SupportedMethods"] == "onedrive" and ad["MultipleFileSupport"] is True
