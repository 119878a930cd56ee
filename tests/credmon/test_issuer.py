"""The local SciTokens/WLCG issuer (FORMATS.md section 5): keys, claims, JWKS, discovery."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from htsec import _fs
from htsec.config import load
from htsec.credmon.issuer import LocalIssuer, generate_key, load_config, load_issuer
from htsec.errors import ConfigError, UsageError
from tests.conftest import run


@pytest.fixture
def issuer_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    key = tmp_path / "issuer" / "key.pem"
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_PRIVATE_KEY", str(key))
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_ISSUER", "https://issuer.example.org")
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_TOKEN_AUDIENCE", "https://storage.example.org")
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_KEY_ID", "key-es256")
    return key


def verify(issuer: LocalIssuer, token: str, audience: str) -> dict:
    keys = {k["kid"]: k for k in issuer.jwks()["keys"]}
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(keys[kid])
    return jwt.decode(
        token,
        key.key,
        algorithms=[key.algorithm_name],
        audience=audience,
        issuer=issuer.config.issuer,
    )


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_keygen_and_tokens_verify(
    issuer_env: Path, alg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_PRIVATE_KEY_ALGORITHM", alg)
    load()
    jwk = generate_key(issuer_env, alg, kid="key-es256")
    assert stat.S_IMODE(issuer_env.stat().st_mode) == 0o600
    assert jwk["alg"] == alg and "d" not in jwk and "p" not in jwk  # public only
    issuer = load_issuer()
    token, lifetime = issuer.mint("alice", now=None)
    claims = verify(issuer, token, "https://storage.example.org")
    assert claims["sub"] == "alice"
    assert claims["scope"] == "read:/user/alice write:/user/alice"
    assert claims["ver"] == "scitoken:2.0"
    assert claims["exp"] - claims["iat"] == lifetime == 1200
    assert claims["nbf"] == claims["iat"] and len(claims["jti"]) == 32
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": "key-es256", "typ": "JWT"}
    with pytest.raises(jwt.InvalidAudienceError):
        verify(issuer, token, "https://elsewhere")


def test_wlcg_profile_and_template(issuer_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_TOKEN_VERSION", "wlcg")
    monkeypatch.setenv(
        "_CONDOR_LOCAL_CREDMON_AUTHZ_TEMPLATE",
        "storage.read:/home/{username} storage.create:/home/{username}/out",
    )
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_TOKEN_LIFETIME", "600")
    load()
    generate_key(issuer_env)
    issuer = load_issuer()
    claims = verify(issuer, issuer.mint("bob")[0], "https://storage.example.org")
    assert claims["wlcg.ver"] == "1.0" and "ver" not in claims
    assert claims["scope"] == "storage.read:/home/bob storage.create:/home/bob/out"
    assert claims["exp"] - claims["iat"] == 600


def test_previous_key_published_during_rotation(
    issuer_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old.pem"
    generate_key(old, kid="old")
    monkeypatch.setenv("_CONDOR_HTSEC_ISSUER_PREVIOUS_KEYS", f"old:{old}")
    load()
    generate_key(issuer_env)
    issuer = load_issuer()
    assert [k["kid"] for k in issuer.jwks()["keys"]] == ["key-es256", "old"]


@pytest.mark.parametrize(
    ("knob", "value", "needle"),
    [
        ("LOCAL_CREDMON_ISSUER", "http://issuer.example.org", "https://"),
        ("LOCAL_CREDMON_TOKEN_AUDIENCE", "", "AUDIENCE is required"),
        ("LOCAL_CREDMON_PRIVATE_KEY_ALGORITHM", "HS256", "ES256 or RS256"),
        ("LOCAL_CREDMON_TOKEN_VERSION", "scitoken:1.0", "TOKEN_VERSION"),
        ("LOCAL_CREDMON_TOKEN_LIFETIME", "soon", "whole number"),
        ("HTSEC_ISSUER_PREVIOUS_KEYS", "old.pem", "use kid:/path.pem"),
    ],
)
def test_bad_config(
    issuer_env: Path, monkeypatch: pytest.MonkeyPatch, knob: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(f"_CONDOR_{knob}", value)
    load()
    with pytest.raises(ConfigError, match=needle):
        load_config()


def test_key_mismatch_and_overwrite(issuer_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load()
    generate_key(issuer_env, "RS256")
    with pytest.raises(ConfigError, match="RSA key but the algorithm is ES256"):
        load_issuer()
    with pytest.raises(UsageError, match="refusing to overwrite"):
        generate_key(issuer_env)


def test_serve_publishes_discovery_and_jwks(issuer_env: Path, authority: object) -> None:
    from htsec.server import create_app

    generate_key(issuer_env, kid="key-es256")
    app = create_app(load(), authority)  # type: ignore[arg-type]
    with TestClient(app) as client:
        disc = client.get("/.well-known/openid-configuration").json()
        assert disc["issuer"] == "https://issuer.example.org"
        assert disc["jwks_uri"] == "https://issuer.example.org/jwks"
        keys = client.get("/jwks").json()["keys"]
        assert [k["kid"] for k in keys] == ["key-es256"]


def test_cli_keygen_and_token(issuer_env: Path) -> None:
    r = run("issuer", "keygen")
    assert r.code == 0, r.err
    assert json.loads(r.out)["kty"] == "EC"
    tok = run("issuer", "token", "carol")
    assert tok.code == 0 and tok.out.count(".") == 2
    again = run("issuer", "keygen")
    assert again.code == 2 and "refusing to overwrite" in again.err


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
def test_scitokens_python_library_verifies(
    issuer_env: Path, alg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SciTokens reference library accepts htsec's tokens (the public key given directly:
    its key fetch would go to the issuer's https URL, covered by test_relying_party.py)."""
    import scitokens
    from cryptography.hazmat.primitives import serialization

    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_PRIVATE_KEY_ALGORITHM", alg)
    load()
    generate_key(issuer_env, alg, kid="key-es256")
    issuer = load_issuer()
    pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token, _ = issuer.mint("alice")
    st = scitokens.SciToken.deserialize(
        token, audience="https://storage.example.org", public_key=pem
    )
    enforcer = scitokens.Enforcer(
        "https://issuer.example.org", audience="https://storage.example.org"
    )
    assert enforcer.test(st, "read", "/user/alice/data")
    assert enforcer.test(st, "write", "/user/alice/out")
    assert not enforcer.test(st, "read", "/user/bob")
    with pytest.raises(Exception):
        scitokens.SciToken.deserialize(
            token[:-4] + "AAAA", audience="https://storage.example.org", public_key=pem
        )


def test_issuer_keys_must_fit_the_algorithm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from htsec.credmon.issuer import load_issuer

    key = tmp_path / "p384.pem"
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _fs.write_atomic(key, pem, 0o600)
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_PRIVATE_KEY", str(key))
    monkeypatch.setenv("_CONDOR_LOCAL_CREDMON_ISSUER", "https://issuer.example.org")
    load()
    with pytest.raises(ConfigError, match="P-256"):
        load_issuer("scitokens")
