"""htsec.plugins.https against XRootD's HTTPS/WebDAV with the SciTokens plugin (TESTING.md),
using tokens from htsec's own local issuer behind a real 'htsec serve' (as the credmon's
relying-party tests do): the starter's .use files, both naming forms, GET and PUT, and the
relying party's refusals reported readably."""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from htsec.plugins.https import HttpsPlugin
from tests.conftest import run, serving_local_issuer
from tests.plugins.conftest import input_ads, results, starter_files
from tests.plugins.test_protocol import check_result_shape
from tests.xrootd import XRootD, make_test_ca, require, start_xrootd

pytestmark = pytest.mark.slow

AUD = "https://storage.example.org"


@pytest.fixture
def issuer(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    require()
    with serving_local_issuer(home, tmp_path / "issuer", monkeypatch, AUD) as url:
        yield url


@pytest.fixture
def xrootd(issuer: str, home: Path, tmp_path: Path) -> Iterator[tuple[XRootD, Path]]:
    """XRootD answering HTTPS (xrd.tls) with a certificate from a test CA; yields the rig and
    that CA's certificate."""
    ca = make_test_ca(tmp_path / "xrdca")
    tls = Path(tempfile.mkdtemp(prefix="htsec-xrd-tls-", dir="/tmp"))  # 'nobody' must read it
    tls.chmod(0o755)
    nobody = pwd.getpwnam("nobody")
    for src in (ca.server_cert, ca.server_key, ca.cert):
        dst = tls / src.name
        shutil.copy(src, dst)
        os.chown(dst, nobody.pw_uid, nobody.pw_gid)
    extra = (
        f"xrd.tls {tls / 'server.pem'} {tls / 'server.key'}\nxrd.tlsca certfile {tls / 'ca.pem'}\n"
    )
    xrd = start_xrootd(
        tmp_path / "xrd", issuer, AUD, trust=[home / "tls" / "ca.pem"], xrootd_extra=extra
    )
    try:
        yield xrd, ca.cert
    finally:
        xrd.stop()
        shutil.rmtree(tls, ignore_errors=True)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    box = tmp_path / "sandbox"
    creds = box / ".condor_creds"
    creds.mkdir(parents=True, mode=0o700)
    for stem, user in (("scitokens", "alice"), ("scitokens_bob", "bob")):
        token = run("issuer", "token", user).out.strip()
        # As the starter writes it: single-line JSON, 0600.
        (creds / f"{stem}.use").write_text(
            json.dumps({"access_token": token, "token_type": "bearer", "expires_in": 600}) + "\n"
        )
        (creds / f"{stem}.use").chmod(0o600)
    monkeypatch.setenv("_CONDOR_CREDS", str(creds))
    return box


def test_get_and_put_through_xrootd_with_local_issuer_tokens(
    xrootd: tuple[XRootD, Path], sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    xrd, ca = xrootd
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    host = f"127.0.0.1:{xrd.port}"
    files = [
        (f"scitokens+https://{host}/user/alice/hello.txt", str(sandbox / "alice.txt")),
        (f"scitokens.bob+davs://{host}/user/bob/hello.txt", str(sandbox / "bob.txt")),
        (f"scitokens+https://{host}/user/bob/hello.txt", str(sandbox / "denied.txt")),
        (f"https://{host}/public/readme.txt", str(sandbox / "anon.txt")),
    ]
    infile, outfile = starter_files(sandbox, input_ads(*files))
    assert HttpsPlugin().run(str(infile), str(outfile), upload=False) == 1, xrd.log_text()[-2000:]
    ads = results(outfile)
    for ad in ads:
        check_result_shape(ad)
    assert [a["TransferSuccess"] for a in ads] == [True, True, False, False]
    assert (sandbox / "alice.txt").read_text() == "hello alice\n"
    assert (sandbox / "bob.txt").read_text() == "hello bob\n"
    assert ads[2]["TransferError"] == (
        "GET 127.0.0.1: HTTP 403 Forbidden (the token does not grant this)"
    )
    assert ads[3]["TransferErrorData"][-1]["ErrorType"] == "Authorization"
    assert not (sandbox / "denied.txt").exists() and not (sandbox / "anon.txt").exists()

    (sandbox / "result.dat").write_bytes(os.urandom(3 << 20))
    (sandbox / "sneaky.dat").write_bytes(b"x")
    up = [
        (f"scitokens+davs://{host}/user/alice/result.dat", str(sandbox / "result.dat")),
        (f"scitokens+davs://{host}/user/bob/sneaky.dat", str(sandbox / "sneaky.dat")),
    ]
    infile, outfile = starter_files(sandbox, input_ads(*up))
    assert HttpsPlugin().run(str(infile), str(outfile), upload=True) == 1
    ok, denied = results(outfile)
    assert ok["TransferSuccess"] is True and ok["TransferFileBytes"] == 3 << 20
    assert xrd.path("/user/alice/result.dat").read_bytes() == (sandbox / "result.dat").read_bytes()
    assert denied["TransferSuccess"] is False and "HTTP 403" in denied["TransferError"]
    assert not xrd.path("/user/bob/sneaky.dat").exists()


def test_expired_token_is_refused_readably(
    xrootd: tuple[XRootD, Path], sandbox: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token that expired before the transfer (the credmon failed to refresh it): the
    relying party refuses it, the result ad says so, nothing is written."""
    xrd, ca = xrootd
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    token = run("issuer", "token", "alice", env={"_CONDOR_LOCAL_CREDMON_TOKEN_LIFETIME": "1"})
    body = token.out.strip().split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert claims["exp"] - claims["iat"] == 1
    creds = sandbox / ".condor_creds"
    (creds / "scitokens.use").write_text(json.dumps({"access_token": token.out.strip()}) + "\n")
    time.sleep(2.5)
    url = f"scitokens+https://127.0.0.1:{xrd.port}/user/alice/hello.txt"
    infile, outfile = starter_files(sandbox, input_ads((url, str(sandbox / "late.txt"))))
    assert HttpsPlugin().run(str(infile), str(outfile), upload=False) == 1
    (ad,) = results(outfile)
    check_result_shape(ad)
    assert ad["TransferErrorData"][-1]["ErrorType"] == "Authorization"
    assert ad["TransferError"].startswith("GET 127.0.0.1: HTTP 40")
    assert not (sandbox / "late.txt").exists()
