"""htsec-plugin-box against the local Box API fake (tests/plugins/fakes/box.py): paths,
downloads, direct and chunked uploads, token naming, one result ad per file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.plugins.fakes._server import Seen
from tests.plugins.fakes.box import BoxFake
from tests.plugins.fakes.run import make_sandbox, run_plugin, write_token
from tests.xrootd import make_test_ca


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    return make_sandbox(tmp_path, "box")


def test_download_resolves_the_folder_path_and_skips_the_bearer_on_the_redirect(
    box: BoxFake, sandbox: Path
) -> None:
    box.put_file("data/run 1/input.txt", b"hello box\n")
    box.put_file("data/other/input.txt", b"wrong file\n")
    run = run_plugin(
        "box",
        sandbox,
        [("box://data/run%201/input.txt", str(sandbox / "input.txt"))],
        env=box.env(),
    )
    assert run.code == 0, run.results
    (ad,) = run.results
    assert ad["TransferSuccess"] is True
    assert ad["TransferFileBytes"] == 10
    assert ad["TransferType"] == "download"
    assert (sandbox / "input.txt").read_bytes() == b"hello box\n"
    assert [p.name for p in sandbox.iterdir() if p.name.startswith(".input")] == []
    downloads = [s for s in box.seen if s.port == box.content.port]
    assert downloads and all("Authorization" not in s.headers for s in downloads)


def test_upload_creates_folders_then_uploads_a_new_version(box: BoxFake, sandbox: Path) -> None:
    out = sandbox / "out.dat"
    out.write_bytes(b"first")
    url = "box://results/2026/out.dat"
    assert run_plugin("box", sandbox, [(url, str(out))], env=box.env(), upload=True).code == 0
    first = box.lookup("results/2026/out.dat")
    assert first is not None and box.read("results/2026/out.dat") == b"first"
    out.write_bytes(b"second version")
    run = run_plugin("box", sandbox, [(url, str(out))], env=box.env(), upload=True)
    assert run.code == 0
    second = box.lookup("results/2026/out.dat")
    assert second is not None and second.id == first.id and second.version == 2
    assert box.read("results/2026/out.dat") == b"second version"
    assert run.results[0]["TransferType"] == "upload"
    assert run.results[0]["TransferFileBytes"] == len(b"second version")


def test_handle_form_reads_box_handle_token(box: BoxFake, sandbox: Path) -> None:
    box.tokens = {"token-work"}
    write_token(sandbox / ".condor_creds", "box_work", "token-work")
    box.put_file("in.txt", b"x")
    run = run_plugin(
        "box", sandbox, [("work+box://in.txt", str(sandbox / "in.txt"))], env=box.env()
    )
    assert run.code == 0, run.results
    assert {s.headers.get("Authorization") for s in box.seen if s.port == box.api.port} == {
        "Bearer token-work"
    }


def test_every_file_gets_a_result_ad_after_a_failure(box: BoxFake, sandbox: Path) -> None:
    box.put_file("a.txt", b"a")
    box.put_file("c.txt", b"c")
    run = run_plugin(
        "box",
        sandbox,
        [
            ("box://a.txt", str(sandbox / "a.txt")),
            ("box://missing/b.txt", str(sandbox / "b.txt")),
            ("box://c.txt", str(sandbox / "c.txt")),
        ],
        env=box.env(),
    )
    assert run.code == 1
    assert [ad["TransferSuccess"] for ad in run.results] == [True, False, True]
    assert "its folder does not exist" in run.results[1]["TransferError"]
    assert not (sandbox / "b.txt").exists()
    assert (sandbox / "c.txt").read_bytes() == b"c"


def test_missing_token_file_is_a_readable_error(box: BoxFake, sandbox: Path) -> None:
    run = run_plugin("box", sandbox, [("other+box://a.txt", str(sandbox / "a.txt"))], env=box.env())
    assert run.code == 1
    assert "box_other.use" in run.results[0]["TransferError"]
    assert box.seen == []


@pytest.mark.parametrize(
    "url", ["box://a/../b.txt", "box://a/%2e%2e/b.txt", "box://a/%252E%252E/b", "box://a/x%2Fy"]
)
def test_traversal_in_the_remote_path_is_refused_before_any_request(
    box: BoxFake, sandbox: Path, url: str
) -> None:
    run = run_plugin("box", sandbox, [(url, str(sandbox / "b.txt"))], env=box.env())
    assert run.code == 1
    assert "not a plain name" in run.results[0]["TransferError"]
    assert box.seen == []


def test_chunked_upload_sends_digested_parts_and_commits_after_202(
    box: BoxFake, sandbox: Path
) -> None:
    big = sandbox / "big.bin"
    big.write_bytes(os.urandom(21_000_000))
    box.commit_pending = 1
    run = run_plugin("box", sandbox, [("box://big/big.bin", str(big))], env=box.env(), upload=True)
    assert run.code == 0, run.results
    assert box.read("big/big.bin") == big.read_bytes()
    parts = [s for s in box.seen if s.method == "PUT"]
    assert len(parts) == 3  # 8 MiB parts
    assert all(s.headers["Digest"].startswith("sha=") for s in parts)
    # a new version of an existing big file goes through /files/{id}/upload_sessions
    run = run_plugin("box", sandbox, [("box://big/big.bin", str(big))], env=box.env(), upload=True)
    assert run.code == 0
    item = box.lookup("big/big.bin")
    assert item is not None and item.version == 2
    assert any(s.path == f"/api/2.0/files/{item.id}/upload_sessions" for s in box.seen)


def test_the_test_base_url_may_only_point_at_this_machine(box: BoxFake, sandbox: Path) -> None:
    env = {**box.env(), "HTSEC_TEST_BOX_API_URL": "https://api.box.example/2.0"}
    run = run_plugin("box", sandbox, [("box://a.txt", str(sandbox / "a.txt"))], env=env)
    assert run.code == 1
    assert "HTSEC_TEST_BOX_API_URL is for the test suite" in run.results[0]["TransferError"]


def test_https_with_the_trusted_ca_works_and_an_unknown_ca_is_refused(
    tmp_path: Path, sandbox: Path
) -> None:
    ca = make_test_ca(tmp_path / "ca", ("127.0.0.1",))
    box = BoxFake(tmp_path / "tls", tls=ca.server_context()).start()
    try:
        box.put_file("in.txt", b"over tls")
        files = [("box://in.txt", str(sandbox / "in.txt"))]
        refused = run_plugin("box", sandbox, files, env=box.env())
        assert refused.code == 1
        assert "CERTIFICATE_VERIFY_FAILED" in refused.results[0]["TransferError"]
        run = run_plugin("box", sandbox, files, env={**box.env(), "SSL_CERT_FILE": str(ca.cert)})
        assert run.code == 0, run.results[0].get("TransferError")
        assert (sandbox / "in.txt").read_bytes() == b"over tls"
        out = sandbox / "out.txt"
        out.write_bytes(b"up over tls")
        up = run_plugin(
            "box",
            sandbox,
            [("box://o/out.txt", str(out))],
            env={**box.env(), "SSL_CERT_FILE": str(ca.cert)},
            upload=True,
        )
        assert up.code == 0 and box.read("o/out.txt") == b"up over tls"
    finally:
        box.stop()


def test_the_token_file_is_read_again_for_every_request(box: BoxFake, sandbox: Path) -> None:
    box.tokens = {"token-1", "token-2"}
    box.put_file("a.txt", b"a")
    box.put_file("b.txt", b"b")

    def replace_after_first_download(seen: Seen) -> None:
        if seen.port == box.content.port and box.on_request is not None:
            box.on_request = None
            write_token(sandbox / ".condor_creds", "box", "token-2")  # the starter's refresh

    box.on_request = replace_after_first_download
    files = [("box://a.txt", str(sandbox / "a.txt")), ("box://b.txt", str(sandbox / "b.txt"))]
    run = run_plugin("box", sandbox, files, env=box.env())
    assert run.code == 0
    sent = [s.headers.get("Authorization") for s in box.seen if s.port == box.api.port]
    assert sent[0] == "Bearer token-1" and sent[-1] == "Bearer token-2"
    assert len(set(sent)) == 2 and sent.index("Bearer token-2") > 0
