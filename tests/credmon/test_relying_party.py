"""htsec's local issuer against real relying parties: XRootD with the SciTokens plugin and
scitokens-cpp's verifier, fetching the keys from 'htsec serve' over HTTPS (FORMATS.md 5)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import run, serving_local_issuer
from tests.xrootd import require, scitokens_verify, start_xrootd

AUD = "https://storage.example.org"


@pytest.fixture
def issuer(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    require(verify=True)
    with serving_local_issuer(home, tmp_path / "issuer", monkeypatch, AUD) as url:
        yield url


def test_xrootd_honours_htsec_tokens(issuer: str, home: Path, tmp_path: Path) -> None:
    ca = home / "tls" / "ca.pem"
    xrd = start_xrootd(tmp_path / "xrd", issuer, AUD, trust=[ca])
    try:
        alice = run("issuer", "token", "alice").out.strip()
        bob = run("issuer", "token", "bob").out.strip()
        h = {"Authorization": f"Bearer {alice}"}
        ok = httpx.get(f"{xrd.url}/user/alice/hello.txt", headers=h, timeout=20)
        assert ok.status_code == 200, xrd.log_text()[-2000:]
        assert httpx.get(f"{xrd.url}/user/bob/hello.txt", headers=h, timeout=20).status_code == 403
        assert httpx.get(f"{xrd.url}/user/alice/hello.txt", timeout=20).status_code == 403
        put = httpx.put(f"{xrd.url}/user/alice/out.txt", headers=h, content=b"result", timeout=20)
        assert put.status_code in (200, 201)
        assert xrd.path("/user/alice/out.txt").read_bytes() == b"result"
        hb = {"Authorization": f"Bearer {bob}"}
        assert httpx.get(f"{xrd.url}/user/bob/hello.txt", headers=hb, timeout=20).status_code == 200
    finally:
        xrd.stop()


def test_scitokens_cpp_verifies(issuer: str, home: Path) -> None:
    token = run("issuer", "token", "alice").out.strip()
    ok, out = scitokens_verify(token, trust=[home / "tls" / "ca.pem"])
    assert ok, out
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    bad, _ = scitokens_verify(tampered, trust=[home / "tls" / "ca.pem"])
    assert not bad
