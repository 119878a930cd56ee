"""htsec-plugin-gdrive against the local Google Drive API fake (tests/plugins/fakes/gdrive.py):
folder paths through files.list queries, alt=media downloads, resumable uploads, token naming,
and its faults."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.fakes._server import Fault
from tests.plugins.fakes.gdrive import GDriveFake
from tests.plugins.fakes.run import make_sandbox, run_plugin, write_token


@pytest.fixture
def drive(tmp_path: Path) -> Iterator[GDriveFake]:
    fake = GDriveFake(tmp_path / "drive").start()
    yield fake
    fake.stop()


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    return make_sandbox(tmp_path, "gdrive")


def test_download_resolves_folders_with_escaped_names(drive: GDriveFake, sandbox: Path) -> None:
    drive.put_file("Bob's data/in.txt", b"quoted")
    run = run_plugin(
        "gdrive",
        sandbox,
        [("gdrive://Bob%27s%20data/in.txt", str(sandbox / "in.txt"))],
        env=drive.env(),
    )
    assert run.code == 0, [ad.get("TransferError") for ad in run.results]
    assert (sandbox / "in.txt").read_bytes() == b"quoted"


def test_upload_creates_folders_then_replaces_the_content(drive: GDriveFake, sandbox: Path) -> None:
    out = sandbox / "out.txt"
    out.write_bytes(b"one")
    url = "work+gdrive://results/out.txt"
    drive.tokens = {"token-w"}
    write_token(sandbox / ".condor_creds", "gdrive_work", "token-w")
    assert run_plugin("gdrive", sandbox, [(url, str(out))], env=drive.env(), upload=True).code == 0
    first = drive.lookup("results/out.txt")
    out.write_bytes(b"two, longer")
    run = run_plugin("gdrive", sandbox, [(url, str(out))], env=drive.env(), upload=True)
    assert run.code == 0, [ad.get("TransferError") for ad in run.results]
    second = drive.lookup("results/out.txt")
    assert first is not None and second is not None and first.id == second.id
    assert drive.read("results/out.txt") == b"two, longer"
    assert any(s.method == "PATCH" for s in drive.seen)


def test_same_name_twice_in_a_folder_is_an_error_not_a_guess(
    drive: GDriveFake, sandbox: Path
) -> None:
    drive.put_file("d/x.txt", b"1")
    folder = drive.lookup("d")
    assert folder is not None
    twin = drive.put_file("e/x.txt", b"2")
    twin.parent = folder.id  # Drive allows two files named x.txt in one folder
    run = run_plugin("gdrive", sandbox, [("gdrive://d/x.txt", str(sandbox / "x"))], env=drive.env())
    assert run.code == 1
    assert "2 items named 'x.txt'" in run.results[0]["TransferError"]


def test_a_google_doc_is_refused_with_the_reason(drive: GDriveFake, sandbox: Path) -> None:
    item = drive.put_file("notes", b"")
    drive.mimes[item.id] = "application/vnd.google-apps.document"
    run = run_plugin("gdrive", sandbox, [("gdrive://notes", str(sandbox / "n"))], env=drive.env())
    assert run.code == 1
    assert "Google document" in run.results[0]["TransferError"]


def test_every_file_gets_a_result_after_a_failure(drive: GDriveFake, sandbox: Path) -> None:
    drive.put_file("a", b"a")
    drive.put_file("c", b"c")
    files = [(f"gdrive://{n}", str(sandbox / n)) for n in "abc"]
    run = run_plugin("gdrive", sandbox, files, env=drive.env())
    assert run.code == 1
    assert [ad["TransferSuccess"] for ad in run.results] == [True, False, True]
    assert "no such file" in run.results[1]["TransferError"]


def test_429_500_and_a_cut_download_are_retried_and_resumed(
    drive: GDriveFake, sandbox: Path
) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    drive.put_file("in.bin", data)
    drive.faults += [
        Fault(r"^GET /drive/v3/files$", "status", 429, {"Retry-After": "1"}),
        Fault(r"^GET /drive/v3/files/\d+$", "status", 500),
        Fault(r"^GET /drive/v3/files/\d+$", "cut", after=999_999),
    ]
    run = run_plugin(
        "gdrive", sandbox, [("gdrive://in.bin", str(sandbox / "in.bin"))], env=drive.env()
    )
    assert run.code == 0, [ad.get("TransferError") for ad in run.results]
    assert (sandbox / "in.bin").read_bytes() == data
    media = [s.headers.get("Range") for s in drive.seen if re.search(r"files/\d+$", s.path)]
    assert media == [None, None, "bytes=999999-"]


def test_an_upload_cut_mid_chunk_resumes_from_what_drive_holds(
    drive: GDriveFake, sandbox: Path
) -> None:
    big = sandbox / "big.bin"
    big.write_bytes(os.urandom(20 * 1024 * 1024 + 3))
    drive.faults += [
        Fault(r"^PUT /upload/drive/v3/files$", "cut", after=3 * 1024 * 1024 + 1),
        Fault(r"^PUT /upload/drive/v3/files$", "status", 503),
    ]
    run = run_plugin(
        "gdrive", sandbox, [("gdrive://big.bin", str(big))], env=drive.env(), upload=True
    )
    assert run.code == 0, [ad.get("TransferError") for ad in run.results]
    assert drive.read("big.bin") == big.read_bytes()
    ranges = [s.headers.get("Content-Range", "") for s in drive.seen if s.method == "PUT"]
    asked = [r for r in ranges if r == f"bytes */{20 * 1024 * 1024 + 3}"]
    assert len(asked) == 2  # what Drive holds, asked again after the 503 to that question
    chunks = [r for r in ranges if not r.startswith("bytes */")]
    assert chunks[1].startswith(f"bytes {3 * 1024 * 1024 + 1}-")  # went on from there


def test_a_lasting_401_is_a_readable_error(drive: GDriveFake, sandbox: Path) -> None:
    drive.tokens = {"another"}
    run = run_plugin(
        "gdrive", sandbox, [("gdrive://in.txt", str(sandbox / "in.txt"))], env=drive.env()
    )
    assert run.code == 1
    error = run.results[0]["TransferError"]
    assert "401" in error and "Invalid Credentials" in error and "token-1" not in error


def test_a_429_on_an_upload_chunk_waits_for_retry_after(drive: GDriveFake, sandbox: Path) -> None:
    (sandbox / "up.bin").write_bytes(os.urandom(1000))
    drive.faults.append(Fault(r"^PUT /upload/drive/v3/files$", "status", 429, {"Retry-After": "2"}))
    run = run_plugin(
        "gdrive", sandbox, [("gdrive://up.bin", str(sandbox / "up.bin"))], env=drive.env(),
        upload=True,
    )  # fmt: skip
    assert run.code == 0, [ad.get("TransferError") for ad in run.results]
    refused = next(i for i, s in enumerate(drive.seen) if s.method == "PUT")
    # The next request (asking what Drive holds) comes no sooner than Drive asked.
    assert drive.seen[refused + 1].at - drive.seen[refused].at >= 1.9
