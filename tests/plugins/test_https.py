"""htsec.plugins.https against nginx (a real HTTPS/WebDAV server the tests start): downloads
and uploads with both token-naming forms, readable errors for 401/403/404, traversal refused,
the token read again before every request, disk full, untrusted certificates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from htsec.plugins.https import HttpsPlugin
from tests.plugins.conftest import input_ads, results, starter_files
from tests.plugins.nginx import Nginx, free_port, start_nginx
from tests.plugins.test_protocol import check_result_shape
from tests.xrootd import make_test_ca

TOKEN = "tok-" + "a" * 40
PLUGIN = str(Path(sys.executable).with_name("htsec-plugin-https"))


class Quick(HttpsPlugin):
    attempts = 2


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    rig = start_nginx(tmp_path_factory.mktemp("nginx"), token=TOKEN)
    (rig.data / "in.txt").write_bytes(b"input data\n")
    (rig.data / "dir").mkdir()
    (rig.data / "dir" / "deep.bin").write_bytes(os.urandom(3 << 20))
    yield rig
    rig.stop()


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    rig = start_nginx(tmp_path_factory.mktemp("plain"))
    (rig.data / "public.txt").write_bytes(b"public\n")
    yield rig
    rig.stop()


@pytest.fixture
def sandbox(tmp_path: Path, nginx: Nginx, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A job sandbox as the starter prepares it: $_CONDOR_CREDS (0700) with .use files."""
    creds = tmp_path / ".condor_creds"
    creds.mkdir(mode=0o700)
    for name in ("scitokens", "mytok_read"):
        use(creds, name, TOKEN)
    monkeypatch.setenv("_CONDOR_CREDS", str(creds))
    monkeypatch.setenv("SSL_CERT_FILE", str(nginx.ca.cert))
    yield tmp_path


def use(creds: Path, name: str, token: str) -> None:
    tmp = creds / f".{name}.tmp"
    tmp.write_text(json.dumps({"access_token": token, "token_type": "bearer"}) + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, creds / f"{name}.use")


def hostport(rig: Nginx) -> str:
    return f"127.0.0.1:{rig.port}"


def test_download_with_both_token_forms_through_the_console_script(
    sandbox: Path, nginx: Nginx
) -> None:
    files = [
        (f"scitokens+https://{hostport(nginx)}/in.txt", str(sandbox / "a.txt")),
        (f"mytok.read+davs://{hostport(nginx)}/dir/deep.bin", str(sandbox / "b.bin")),
    ]
    infile, outfile = starter_files(sandbox, input_ads(*files))
    proc = subprocess.run(
        [PLUGIN, "-infile", str(infile), "-outfile", str(outfile)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=sandbox,
    )
    assert proc.returncode == 0, (proc.stderr, outfile.read_text())
    a, b = results(outfile)
    for ad in (a, b):
        check_result_shape(ad)
        assert ad["TransferSuccess"] is True
        assert ad["TransferHostName"] == "127.0.0.1"
    assert (sandbox / "a.txt").read_bytes() == b"input data\n"
    assert (sandbox / "b.bin").read_bytes() == (nginx.data / "dir" / "deep.bin").read_bytes()
    assert b["TransferFileBytes"] == 3 << 20 and b["TransferProtocol"] == "davs"
    assert TOKEN not in proc.stderr + outfile.read_text()


def test_upload_with_put(sandbox: Path, nginx: Nginx) -> None:
    (sandbox / "out.dat").write_bytes(os.urandom(5 << 20) + b"end")
    (sandbox / "empty").write_bytes(b"")
    files = [
        (f"scitokens+davs://{hostport(nginx)}/results/out.dat", str(sandbox / "out.dat")),
        (f"scitokens+https://{hostport(nginx)}/results/empty", str(sandbox / "empty")),
    ]
    infile, outfile = starter_files(sandbox, input_ads(*files))
    assert HttpsPlugin().run(str(infile), str(outfile), upload=True) == 0, outfile.read_text()
    up, empty = results(outfile)
    assert up["TransferType"] == "upload" and up["TransferFileBytes"] == (5 << 20) + 3
    assert (nginx.data / "results" / "out.dat").read_bytes() == (sandbox / "out.dat").read_bytes()
    assert (nginx.data / "results" / "empty").read_bytes() == b""
    assert empty["TransferSuccess"] is True


def test_plain_https_sends_no_token(
    tmp_path: Path, plain: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(plain.ca.cert))
    infile, outfile = starter_files(
        tmp_path, input_ads((f"https://{hostport(plain)}/public.txt", str(tmp_path / "p")))
    )
    assert HttpsPlugin().run(str(infile), str(outfile), upload=False) == 0
    assert (tmp_path / "p").read_bytes() == b"public\n"


@pytest.mark.parametrize(
    ("path", "kind", "words"),
    [
        ("/status/403", "Authorization", "HTTP 403 Forbidden (the token does not grant this)"),
        ("/status/404", "Specification", "HTTP 404 Not Found"),
        ("/nope.txt", "Specification", "HTTP 404 Not Found"),
        ("/status/400", "Specification", "HTTP 400 Bad Request"),
    ],
)
def test_http_errors_are_readable(
    sandbox: Path, nginx: Nginx, path: str, kind: str, words: str
) -> None:
    infile, outfile = starter_files(
        sandbox, input_ads((f"scitokens+https://{hostport(nginx)}{path}", str(sandbox / "x")))
    )
    assert Quick().run(str(infile), str(outfile), upload=False) == 1
    (ad,) = results(outfile)
    check_result_shape(ad)
    assert ad["TransferError"] == f"GET 127.0.0.1: {words}"
    assert ad["TransferErrorData"][-1]["ErrorType"] == kind
    assert not (sandbox / "x").exists()


def test_wrong_token_is_a_401_with_refresh_hint(sandbox: Path, nginx: Nginx) -> None:
    use(sandbox / ".condor_creds", "scitokens", "tok-wrong")
    infile, outfile = starter_files(
        sandbox, input_ads((f"scitokens+https://{hostport(nginx)}/in.txt", str(sandbox / "x")))
    )
    assert Quick().run(str(infile), str(outfile), upload=False) == 1
    (ad,) = results(outfile)
    assert "HTTP 401" in ad["TransferError"] and "token was refused" in ad["TransferError"]
    err = ad["TransferErrorData"][-1]
    assert (err["ErrorType"], err["FailureType"], err["ShouldRefresh"]) == (
        "Authorization",
        "Authentication",
        True,
    )
    assert "tok-wrong" not in outfile.read_text()


def test_token_file_is_read_again_for_every_file(sandbox: Path, nginx: Nginx) -> None:
    """The starter replaces the .use file during the job; the next request must use the new
    one (a plugin that cached the first token would move the second file too)."""
    files = [
        (f"scitokens+https://{hostport(nginx)}/in.txt", str(sandbox / "1")),
        (f"scitokens+https://{hostport(nginx)}/in.txt", str(sandbox / "2")),
    ]
    infile, outfile = starter_files(sandbox, input_ads(*files))

    class Replacing(Quick):
        def get(self, url: str, path: Path, transfer: object) -> None:  # type: ignore[override]
            super().get(url, path, transfer)  # type: ignore[arg-type]
            use(sandbox / ".condor_creds", "scitokens", "tok-revoked")

    assert Replacing().run(str(infile), str(outfile), upload=False) == 1
    assert [a["TransferSuccess"] for a in results(outfile)] == [True, False]


def test_missing_token_file_names_it(sandbox: Path, nginx: Nginx) -> None:
    infile, outfile = starter_files(
        sandbox, input_ads((f"other+https://{hostport(nginx)}/in.txt", str(sandbox / "x")))
    )
    assert Quick().run(str(infile), str(outfile), upload=False) == 1
    (ad,) = results(outfile)
    assert "other.use" in ad["TransferError"] and "use_oauth_services" in ad["TransferError"]


@pytest.mark.parametrize(
    "path",
    ["/dir/../in.txt", "/dir/%2e%2e/in.txt", "/dir/%2E%2E%2Fin.txt", "/dir/%252e%252e/in.txt"],
)
def test_traversal_is_refused_before_any_request(sandbox: Path, nginx: Nginx, path: str) -> None:
    before = len(nginx.access_log())
    infile, outfile = starter_files(
        sandbox, input_ads((f"scitokens+https://{hostport(nginx)}{path}", str(sandbox / "x")))
    )
    assert Quick().run(str(infile), str(outfile), upload=False) == 1
    (ad,) = results(outfile)
    assert "refused" in ad["TransferError"]
    assert ad["TransferErrorData"][0]["ErrorType"] == "Parameter"
    assert len(nginx.access_log()) == before


def test_untrusted_certificate(
    tmp_path: Path, plain: Nginx, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_test_ca(tmp_path / "otherca")
    monkeypatch.setenv("SSL_CERT_FILE", str(other.cert))
    infile, outfile = starter_files(
        tmp_path, input_ads((f"https://{hostport(plain)}/public.txt", str(tmp_path / "p")))
    )
    assert Quick().run(str(infile), str(outfile), upload=False) == 1
    (ad,) = results(outfile)
    assert "TLS certificate of 127.0.0.1 not trusted" in ad["TransferError"]
    assert ad["TransferErrorData"][0]["FailureType"] == "Authentication"


def test_connection_refused_is_a_contact_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    infile, outfile = starter_files(
        tmp_path, input_ads((f"https://127.0.0.1:{free_port()}/x", str(tmp_path / "p")))
    )
    assert Quick().run(str(infile), str(outfile), upload=False) == 1
    (ad,) = results(outfile)
    assert "cannot connect to 127.0.0.1" in ad["TransferError"]
    assert [e["ErrorType"] for e in ad["TransferErrorData"]] == ["Contact", "Contact"]


def test_upload_of_a_symlink_is_refused(sandbox: Path, nginx: Nginx) -> None:
    (sandbox / "link").symlink_to("/etc/hostname")
    infile, outfile = starter_files(
        sandbox, input_ads((f"scitokens+https://{hostport(nginx)}/up/link", str(sandbox / "link")))
    )
    assert Quick().run(str(infile), str(outfile), upload=True) == 1
    (ad,) = results(outfile)
    assert "symbolic link" in ad["TransferError"]
    assert not (nginx.data / "up" / "link").exists()


def test_disk_full_is_reported_and_leaves_no_partial_file(sandbox: Path, nginx: Nginx) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = sandbox / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        infile, outfile = starter_files(
            sandbox,
            input_ads((f"scitokens+https://{hostport(nginx)}/dir/deep.bin", str(small / "d"))),
        )
        assert Quick().run(str(infile), str(outfile), upload=False) == 1
        (ad,) = results(outfile)
        assert "No space left on device" in ad["TransferError"]
        assert ad["TransferErrorData"][-1]["FailureType"] == "NoSpace"
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)
