"""The XRootD SciTokens rig (tests/xrootd.py) against tokens from a test issuer of our own.

The issuer here is independent of htsec: an EC P-256 key, pyjwt, and the rig's small HTTPS
server publishing discovery + JWKS with a certificate from a throw-away CA. XRootD fetches the
keys for real over HTTPS; these tests pin down what the relying party accepts and refuses, so
that htsec's own issuer can later be judged by the same rig.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from tests import xrootd
from tests.xrootd import IssuerServer, LocalCA, XRootD

AUD = "https://xrootd.test.example"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Issuer:
    server: IssuerServer
    key: ec.EllipticCurvePrivateKey
    kid: str

    @property
    def url(self) -> str:
        return self.server.issuer

    def mint(
        self,
        scope: str,
        *,
        profile: str = "scitokens",
        aud: str | list[str] = AUD,
        lifetime: int = 600,
        age: int = 0,
        key: ec.EllipticCurvePrivateKey | None = None,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        """A token shaped like htsec's local issuer makes them (FORMATS.md section 5);
        ``age`` seconds old."""
        now = int(time.time()) - age
        body: dict[str, Any] = {
            "iss": self.url,
            "sub": "alice",
            "scope": scope,
            "aud": aud,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
        }
        body.update({"ver": "scitoken:2.0"} if profile == "scitokens" else {"wlcg.ver": "1.0"})
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}  # None: leave the claim out
        return jwt.encode(
            body, key or self.key, algorithm="ES256", headers={"kid": kid or self.kid}
        )


def _jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, alg="ES256", use="sig")
    return jwk


@dataclass
class Rig:
    ca: LocalCA
    issuer: Issuer
    xrd: XRootD


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    xrootd.require(verify=True)
    tmp = tmp_path_factory.mktemp("xrootd")
    ca = xrootd.make_test_ca(tmp / "ca")
    key = ec.generate_private_key(ec.SECP256R1())
    with (
        xrootd.serve_issuer(ca, {"keys": [_jwk(key, "k1")]}) as server,
        xrootd.start_xrootd(tmp, server.issuer, AUD, trust=[ca.cert]) as xrd,
    ):
        yield Rig(ca, Issuer(server, key, "k1"), xrd)


def get(rig: Rig, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{rig.xrd.url}{path}", headers=headers, timeout=10)


def put(rig: Rig, path: str, body: bytes, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.put(f"{rig.xrd.url}{path}", content=body, headers=headers, timeout=10)


def test_no_token_is_refused(rig: Rig) -> None:
    assert get(rig, "/user/alice/hello.txt").status_code == 403
    assert get(rig, "/public/readme.txt").status_code == 403
    assert put(rig, "/user/alice/anon.txt", b"x").status_code == 403
    assert not rig.xrd.path("/user/alice/anon.txt").exists()


def test_read_scope_reads_its_path_only(rig: Rig) -> None:
    token = rig.issuer.mint("read:/user/alice")
    r = get(rig, "/user/alice/hello.txt", token)
    assert (r.status_code, r.text) == (200, "hello alice\n")
    assert get(rig, "/user/alice/sub/deep.txt", token).text == "deep alice\n"
    assert get(rig, "/user/bob/hello.txt", token).status_code == 403
    assert get(rig, "/public/readme.txt", token).status_code == 403
    # The keys came from the issuer over HTTPS (the rig's CA trust works).
    assert "/.well-known/openid-configuration" in rig.issuer.server.requests
    assert "/jwks" in rig.issuer.server.requests


def test_scope_paths_are_string_prefixes_in_xrootd_5_5(rig: Rig) -> None:
    """A finding, not a wish: XRootD 5.5.3 (Debian 12) matches scope paths as plain string
    prefixes, so ``read:/user/alice`` also reads ``/user/alicex``. The WLCG profile says paths
    end at '/' boundaries; htsec must not mint scopes that rely on the relying party to
    enforce them (e.g. ``/user/alice`` next to a user ``alicex``). A trailing '/' does not help:
    it is normalised away."""
    for scope in ("read:/user/alice", "read:/user/alice/", "storage.read:/user/alice/"):
        profile = "wlcg" if scope.startswith("storage.") else "scitokens"
        token = rig.issuer.mint(scope, profile=profile)
        assert get(rig, "/user/alice/hello.txt", token).status_code == 200, scope
        assert get(rig, "/user/alicex/hello.txt", token).status_code == 200, scope


def test_wrong_audience_is_refused(rig: Rig) -> None:
    for aud in ("https://other.example", [f"{AUD}/x", "https://other.example"], AUD + "/"):
        token = rig.issuer.mint("read:/user/alice", aud=aud)
        assert get(rig, "/user/alice/hello.txt", token).status_code == 403, aud
    assert "'aud' claim verification failed" in rig.xrd.log_text()
    # A list containing the audience is fine.
    token = rig.issuer.mint("read:/user/alice", aud=["https://other.example", AUD])
    assert get(rig, "/user/alice/hello.txt", token).status_code == 200
    # Each profile's wildcard audience matches any relying party; the other profile's does not.
    wlcg_any = "https://wlcg.cern.ch/jwt/v1/any"
    for profile, aud, status in [
        ("scitokens", "ANY", 200),
        ("wlcg", wlcg_any, 200),
        ("scitokens", wlcg_any, 403),
        ("wlcg", "ANY", 403),
    ]:
        scope = "read:/user/alice" if profile == "scitokens" else "storage.read:/user/alice"
        token = rig.issuer.mint(scope, profile=profile, aud=aud)
        assert get(rig, "/user/alice/hello.txt", token).status_code == status, (profile, aud)


def test_expired_and_not_yet_valid_are_refused(rig: Rig) -> None:
    expired = rig.issuer.mint("read:/user/alice", age=3600, lifetime=600)
    assert get(rig, "/user/alice/hello.txt", expired).status_code == 403
    assert "token expired" in rig.xrd.log_text()
    future = rig.issuer.mint("read:/user/alice", nbf=int(time.time()) + 3600)
    assert get(rig, "/user/alice/hello.txt", future).status_code == 403


def test_required_claims_and_no_leeway(rig: Rig) -> None:
    now = int(time.time())
    for claims in ({"nbf": None}, {"aud": None}, {"sub": None}, {"iat": now + 5}, {"exp": now - 1}):
        token = rig.issuer.mint("read:/user/alice", **claims)
        assert get(rig, "/user/alice/hello.txt", token).status_code == 403, claims
    token = rig.issuer.mint("read:/user/alice", jti=None)
    assert get(rig, "/user/alice/hello.txt", token).status_code == 200


def test_bad_signature_unknown_key_and_foreign_issuer_are_refused(rig: Rig) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    forged = rig.issuer.mint("read:/user/alice", key=other)
    assert get(rig, "/user/alice/hello.txt", forged).status_code == 403
    unknown_kid = rig.issuer.mint("read:/user/alice", key=other, kid="k2")
    assert get(rig, "/user/alice/hello.txt", unknown_kid).status_code == 403
    foreign = rig.issuer.mint("read:/user/alice", iss="https://localhost:1/elsewhere")
    assert get(rig, "/user/alice/hello.txt", foreign).status_code == 403
    tampered = rig.issuer.mint("read:/user/bob")
    head, _, rest = tampered.partition(".")
    _, _, sig = rest.partition(".")
    good_body = rig.issuer.mint("read:/user/alice").split(".")[1]
    assert get(rig, "/user/alice/hello.txt", f"{head}.{good_body}.{sig}").status_code == 403


def test_put_needs_write_scope(rig: Rig) -> None:
    read_only = rig.issuer.mint("read:/user/alice")
    assert put(rig, "/user/alice/ro.txt", b"nope", read_only).status_code == 403
    assert not rig.xrd.path("/user/alice/ro.txt").exists()
    writer = rig.issuer.mint("read:/user/alice write:/user/alice")
    r = put(rig, "/user/alice/new.txt", b"written\n", writer)
    assert r.status_code in (200, 201), r.text
    assert rig.xrd.path("/user/alice/new.txt").read_bytes() == b"written\n"
    assert get(rig, "/user/alice/new.txt", writer).text == "written\n"
    assert put(rig, "/user/bob/new.txt", b"nope", writer).status_code == 403
    assert not rig.xrd.path("/user/bob/new.txt").exists()


def test_wlcg_profile(rig: Rig) -> None:
    reader = rig.issuer.mint("storage.read:/user/alice", profile="wlcg")
    assert get(rig, "/user/alice/hello.txt", reader).text == "hello alice\n"
    assert get(rig, "/user/bob/hello.txt", reader).status_code == 403
    assert put(rig, "/user/alice/wlcg-ro.txt", b"nope", reader).status_code == 403
    creator = rig.issuer.mint("storage.read:/user/alice storage.create:/user/alice", profile="wlcg")
    assert put(rig, "/user/alice/wlcg.txt", b"wlcg\n", creator).status_code in (200, 201)
    assert rig.xrd.path("/user/alice/wlcg.txt").read_bytes() == b"wlcg\n"


def test_scitokens_verify(rig: Rig) -> None:
    trust = [rig.ca.cert]
    ok, out = xrootd.scitokens_verify(rig.issuer.mint("read:/user/alice"), trust=trust)
    assert ok, out
    wlcg = rig.issuer.mint("storage.read:/", profile="wlcg")
    assert xrootd.scitokens_verify(wlcg, trust=trust)[0]
    ok, out = xrootd.scitokens_verify(rig.issuer.mint("read:/", age=7200), trust=trust)
    assert not ok and "expired" in out
    forged = rig.issuer.mint("read:/", key=ec.generate_private_key(ec.SECP256R1()))
    assert not xrootd.scitokens_verify(forged, trust=trust)[0]
    assert not xrootd.scitokens_verify("not-a-token", trust=trust)[0]
    if rig.xrd.trust.mode == "namespace":  # in system mode the CA is trusted by everyone
        # Without the CA the issuer's certificate is not trusted: no key, no success.
        ok, out = xrootd.scitokens_verify(rig.issuer.mint("read:/user/alice"))
        assert not ok and "SSL" in out


def _system_ca_files() -> set[str]:
    return {p.name for p in xrootd.SYSTEM_CA_DIR.glob(f"{xrootd.SYSTEM_CA_PREFIX}*")}


def test_system_trust_mode_is_undone_even_after_sigkill(rig: Rig, tmp_path: Path) -> None:
    bundle_before = xrootd.SYSTEM_BUNDLE.read_bytes()
    files_before = _system_ca_files()  # the rig's own CA, when the whole run is in system mode
    token = rig.issuer.mint("read:/user/alice")
    other_ca = xrootd.make_test_ca(tmp_path / "other")
    with xrootd.ca_trust([other_ca.cert], tmp_path, "system") as trust:
        assert trust.installed is not None and trust.installed.name in _system_ca_files()
        assert other_ca.cert.read_bytes().strip() in xrootd.SYSTEM_BUNDLE.read_bytes()
        ok, out = xrootd.scitokens_verify(token, trust=[rig.ca.cert], trust_mode="system")
        assert ok, out
    assert _system_ca_files() == files_before
    assert xrootd.SYSTEM_BUNDLE.read_bytes() == bundle_before

    # A test process killed while the CA is installed: its watchdog removes the CA.
    code = (
        "import sys, time, pathlib; from tests import xrootd; "
        "t = xrootd.ca_trust([sys.argv[1]], pathlib.Path(sys.argv[2]), 'system'); "
        "print('installed', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(rig.ca.cert), str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "installed"
        assert len(_system_ca_files() - files_before) == 1
        assert rig.ca.cert.read_bytes().strip() in xrootd.SYSTEM_BUNDLE.read_bytes()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()
    assert xrootd.wait_for(lambda: _system_ca_files() == files_before, timeout=20)
    assert xrootd.wait_for(lambda: xrootd.SYSTEM_BUNDLE.read_bytes() == bundle_before, 20)


def test_xrootd_keeps_its_key_cache_private(rig: Rig) -> None:
    # Runs after the system-trust test on purpose: the refetch below also shows that XRootD's
    # private CA bundle survived the update-ca-certificates runs there.
    db = rig.xrd.cache / "scitokens" / "scitokens_cpp.sqllite"
    get(rig, "/user/alice/hello.txt", rig.issuer.mint("read:/user/alice"))
    assert db.exists() and db.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    before = rig.issuer.server.requests.count("/jwks")
    rig.xrd.forget_keys()
    assert get(rig, "/user/alice/hello.txt", rig.issuer.mint("read:/user/alice")).status_code == 200
    assert rig.issuer.server.requests.count("/jwks") == before + 1
