"""htsec's ID tokens against HTCondor's own library (shared/FORMATS.md section 7).

HTCondor 25.14.1's C++ code, from the ``htcondor`` wheel, mints tokens exactly as
``condor_token_create`` does and runs the real IDTOKENS client/server exchange (see
conftest.py and shared/TESTING.md, "HTCondor's library as a reference"). The tests check both
directions: tokens HTCondor mints must pass ``htsec token verify``, and tokens ``htsec token
create`` mints must be accepted by HTCondor's server with the right identity and authorizations.
Every key has a random secret containing NUL bytes, so key handling is exercised on each run.

The ``test_rig_*`` tests need only the compiled programs: they prove the rig can both accept
and reject, and they check the facts of FORMATS.md section 7 against HTCondor itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.compat.conftest import CondorPool, CondorToolError, CondorTools, HtsecCli, MakePool

pytestmark = [pytest.mark.compat, pytest.mark.timeout(120)]

# An identity with everything HTCondor passes through unvalidated: "/" (escaped as "\/" by its
# JSON writer), a quote, a backslash, UTF-8, a TAB and DEL (written as \u00xx).
ODD_IDENTITY = 'we/ird"\\\u00fc\t\x7fx@d'


# --------------------------------------------------------------------------------------------
# Helpers: a plain reading of FORMATS.md section 7, independent of htsec's code.


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def split_token(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    header, payload, signature = token.split(".")
    return (
        json.loads(b64url_decode(header)),
        json.loads(b64url_decode(payload)),
        b64url_decode(signature),
    )


def hmac_key(secret: bytes, key_name: str) -> bytes:
    """FORMATS.md 7: POOL's secret is doubled; HKDF-SHA256, salt "htcondor", info "master jwt"."""
    material = secret + secret if key_name == "POOL" else secret
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"htcondor", info=b"master jwt").derive(
        material
    )


def sign(signing_input: str, key: bytes) -> str:
    return b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


def reference_token(secret: bytes, key_name: str, claims: dict[str, Any]) -> str:
    """A token built from FORMATS.md alone (HTCondor's layout: compact, sorted, "\\/")."""
    return signed_token(key_name, claims, hmac_key(secret, key_name))


def signed_token(key_name: str, claims: dict[str, Any], key: bytes) -> str:
    """A token in HTCondor's layout signed with the HMAC key ``key`` whatever ``kid`` says."""
    header = b64url(json.dumps({"alg": "HS256", "kid": key_name}, separators=(",", ":")).encode())
    body = json.dumps(claims, separators=(",", ":"), sort_keys=True).replace("/", "\\/")
    payload = b64url(body.encode())
    return f"{header}.{payload}.{sign(f'{header}.{payload}', key)}"


def scopes(authz: list[str]) -> str:
    return " ".join(f"condor:/{a}" for a in authz)


# Cases: (key name, identity, lifetime or -1, authorizations)
MINT_CASES = [
    pytest.param("POOL", "alice@compat.example.org", -1, [], id="pool-plain"),
    pytest.param("POOL", "alice@compat.example.org", 3600, ["READ", "WRITE"], id="pool-life-authz"),
    pytest.param(
        "site1",
        "glidein@cms.example",
        86400,
        ["ADVERTISE_STARTD", "ADVERTISE_MASTER", "READ"],
        id="named-life-authz",
    ),
    pytest.param(
        "site1", "svc/host.example.org@compat.example.org", -1, ["READ"], id="named-authz"
    ),
    pytest.param("site1", "bob", 600, [], id="named-life-no-domain"),
]


# --------------------------------------------------------------------------------------------
# The rig itself (HTCondor on both sides, or FORMATS.md against HTCondor)


@pytest.mark.parametrize(("key", "identity", "lifetime", "authz"), MINT_CASES)
def test_rig_condor_token_passes_condor_handshake(
    condor_tools: CondorTools,
    condor_pool: CondorPool,
    key: str,
    identity: str,
    lifetime: int,
    authz: list[str],
) -> None:
    token = condor_tools.mint(condor_pool, key, identity, lifetime, authz)
    result = condor_tools.handshake(condor_pool, token)
    assert result.ok, result.error
    assert result.identity == identity
    assert result.policy.get("AuthTokenSubject") == identity
    assert result.policy.get("AuthTokenIssuer") == condor_pool.trust_domain
    assert result.policy.get("AuthTokenId") == split_token(token)[1]["jti"]
    if authz:
        assert result.policy.get("LimitAuthorization") == ",".join(authz)
    else:
        assert "LimitAuthorization" not in result.policy


def test_rig_condor_handshake_odd_identity(
    condor_tools: CondorTools,
    condor_pool: CondorPool,
) -> None:
    token = condor_tools.mint(condor_pool, "site1", ODD_IDENTITY, 60, [])
    assert split_token(token)[1]["sub"] == ODD_IDENTITY
    result = condor_tools.handshake(condor_pool, token)
    assert result.ok, result.error
    assert result.identity == ODD_IDENTITY


@pytest.mark.parametrize("key", ["POOL", "site1"])
def test_rig_condor_rejects_token_of_another_pool(
    condor_mint: Callable[..., str],
    condor_handshake: Callable[..., tuple[bool, str]],
    make_condor_pool: MakePool,
    key: str,
) -> None:
    """Same key names, other secrets: the simple helpers give (ok, identity or reason)."""
    issuer_pool, other_pool = make_condor_pool(), make_condor_pool()
    token = condor_mint(issuer_pool.config, key, "alice@compat.example.org", 600, ["READ"])
    assert condor_handshake(issuer_pool.config, token) == (True, "alice@compat.example.org")
    ok, reason = condor_handshake(other_pool.config, token)
    assert not ok
    assert "server rejected the client" in reason


def test_rig_condor_rejects_missing_key_and_expired(
    condor_tools: CondorTools,
    condor_pool: CondorPool,
) -> None:
    secret = condor_pool.secrets["site1"]
    now = int(time.time())
    claims = {"iat": now, "iss": condor_pool.trust_domain, "jti": secrets.token_hex(16), "sub": "a"}
    good = reference_token(secret, "site1", claims)
    assert condor_tools.handshake(condor_pool, good).ok
    expired = reference_token(secret, "site1", {**claims, "exp": now - 5})
    assert not condor_tools.handshake(condor_pool, expired).ok
    condor_pool.remove_key("site1")
    assert not condor_tools.handshake(condor_pool, good).ok


def test_rig_client_offers_only_tokens_for_server_keys(
    condor_tools: CondorTools, condor_pool: CondorPool
) -> None:
    """FORMATS.md 7: the client skips tokens whose kid the server did not advertise."""
    token = condor_tools.mint(condor_pool, "site1", "ivan@compat.example.org", 600, [])
    assert condor_tools.handshake(condor_pool, token, server_keys=["POOL", "site1"]).ok
    result = condor_tools.handshake(condor_pool, token, server_keys=["POOL"])
    assert not result.ok
    assert "No token found" in (result.error or "")


@pytest.mark.parametrize("key", ["POOL", "site1"])
def test_rig_formats_hmac_key_matches_condor(
    condor_tools: CondorTools,
    condor_pool: CondorPool,
    key: str,
) -> None:
    """FORMATS.md 7: whole file unscrambled (NULs kept), POOL doubled, HKDF, HS256 layout."""
    secret = condor_pool.secrets[key]
    assert b"\0" in secret
    assert b"\0" in condor_pool.key_path(key).read_bytes()
    token = condor_tools.mint(condor_pool, key, "alice@compat.example.org", 300, ["READ", "WRITE"])
    header_b64, payload_b64, signature_b64 = token.split(".")
    assert b64url_decode(header_b64) == f'{{"alg":"HS256","kid":"{key}"}}'.encode()
    assert "=" not in token
    assert signature_b64 == sign(f"{header_b64}.{payload_b64}", hmac_key(secret, key))
    # Not doubled (or doubled) the other way round gives another key.
    other = "site1" if key == "POOL" else "POOL"
    assert signature_b64 != sign(f"{header_b64}.{payload_b64}", hmac_key(secret, other))

    raw = b64url_decode(payload_b64)
    payload = json.loads(raw)
    assert list(payload) == sorted(payload) == ["exp", "iat", "iss", "jti", "scope", "sub"]
    assert payload["exp"] - payload["iat"] == 300
    assert payload["iss"] == condor_pool.trust_domain
    assert len(payload["jti"]) == 32 and payload["jti"] == payload["jti"].lower()
    int(payload["jti"], 16)
    assert payload["scope"] == "condor:/READ condor:/WRITE"
    assert b"condor:\\/READ" in raw  # HTCondor's JSON writer escapes "/"


def test_rig_formats_reference_token_accepted_by_condor(
    condor_tools: CondorTools,
    condor_pool: CondorPool,
) -> None:
    """A token built only from FORMATS.md passes HTCondor's server; a wrong secret does not."""
    claims = {
        "exp": int(time.time()) + 600,
        "iat": int(time.time()),
        "iss": condor_pool.trust_domain,
        "jti": secrets.token_hex(16),
        "scope": scopes(["READ"]),
        "sub": "carol@compat.example.org",
    }
    for key in ("POOL", "site1"):
        good = reference_token(condor_pool.secrets[key], key, claims)
        result = condor_tools.handshake(condor_pool, good)
        assert result.ok, result.error
        assert result.identity == "carol@compat.example.org"
        assert result.policy.get("LimitAuthorization") == "READ"
        truncated = condor_pool.secrets[key].split(b"\0")[0]
        assert not condor_tools.handshake(condor_pool, reference_token(truncated, key, claims)).ok


@pytest.mark.parametrize("knob", [None, "SEC_PASSWORD_FILE"], ids=["default", "password-file"])
def test_rig_pool_key_location_fallbacks(
    condor_tools: CondorTools,
    make_condor_pool: MakePool,
    knob: str | None,
) -> None:
    """Without SEC_TOKEN_POOL_SIGNING_KEY_FILE, POOL is $(SEC_PASSWORD_FILE), whose default is
    $(SEC_PASSWORD_DIRECTORY)/POOL (HTCondor's param table)."""
    pool = make_condor_pool(pool_key_knob=knob)
    assert "SEC_TOKEN_POOL_SIGNING_KEY_FILE" not in pool.config.read_text()
    token = condor_tools.mint(pool, "POOL", "dave@compat.example.org", -1, [])
    header_b64, payload_b64, signature_b64 = token.split(".")
    expected = sign(f"{header_b64}.{payload_b64}", hmac_key(pool.secrets["POOL"], "POOL"))
    assert signature_b64 == expected
    assert condor_tools.handshake(pool, token).ok
    pool.remove_key("POOL")
    with pytest.raises(CondorToolError, match="condor_mint exited 2"):
        condor_tools.mint(pool, "POOL", "dave@compat.example.org", -1, [])


# FORMATS.md section 7 reference vectors: (key name, key file hex, identity, lifetime, authz,
# first jti byte, token), all with iat = 1700000000 and TRUST_DOMAIN = example.org.
_SITE1_FILE = "b9c1d78bbbc4d0c2adc8dd9dbbd993de"
REFERENCE_VECTORS = [
    pytest.param(
        "POOL",
        "deacbcecdaa8b8e8d6a4b4e4d2a0b0e0cebcacfccab8a8f8c6b4a4f4c2b0a0f0"
        "fe8c9cccfa8898c8f68494c4f28090c0ee9c8cdcea9888d8e69484d4e29080d0",
        "alice@example.org",
        3600,
        ["READ", "WRITE"],
        0x00,
        "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJleHAiOjE3MDAwMDM2MDAsImlhdCI6MTcwMDAwMDAwMCwia"
        "XNzIjoiZXhhbXBsZS5vcmciLCJqdGkiOiIwMDAxMDIwMzA0MDUwNjA3MDgwOTBhMGIwYzBkMGUwZiIsInNjb3BlIj"
        "oiY29uZG9yOlwvUkVBRCBjb25kb3I6XC9XUklURSIsInN1YiI6ImFsaWNlQGV4YW1wbGUub3JnIn0._CDHUBKyKg2"
        "Cfc2GD7sOAnxsSMCiSvgydgwrfI1Q4PI",
        id="1-pool",
    ),
    pytest.param(
        "site1",
        _SITE1_FILE,
        "glidein@cms.example",
        86400,
        ["ADVERTISE_STARTD", "ADVERTISE_MASTER", "READ"],
        0x10,
        "eyJhbGciOiJIUzI1NiIsImtpZCI6InNpdGUxIn0.eyJleHAiOjE3MDAwODY0MDAsImlhdCI6MTcwMDAwMDAwMCwia"
        "XNzIjoiZXhhbXBsZS5vcmciLCJqdGkiOiIxMDExMTIxMzE0MTUxNjE3MTgxOTFhMWIxYzFkMWUxZiIsInNjb3BlIj"
        "oiY29uZG9yOlwvQURWRVJUSVNFX1NUQVJURCBjb25kb3I6XC9BRFZFUlRJU0VfTUFTVEVSIGNvbmRvcjpcL1JFQU"
        "QiLCJzdWIiOiJnbGlkZWluQGNtcy5leGFtcGxlIn0.nL7yFmBC3Oluq7tg7w_5_AMW--zsyoeb7I2rDNscAIY",
        id="2-site1",
    ),
    pytest.param(
        "POOL",
        "aecccd9ca9c2cc8b",
        "condor@example.org",
        -1,
        [],
        0x20,
        "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJpYXQiOjE3MDAwMDAwMDAsImlzcyI6ImV4YW1wbGUub3JnIi"
        "wianRpIjoiMjAyMTIyMjMyNDI1MjYyNzI4MjkyYTJiMmMyZDJlMmYiLCJzdWIiOiJjb25kb3JAZXhhbXBsZS5vcmci"
        "fQ.TqNN_wOZ3XQfbohQDgr6pr-GmnJ6r2cEhfrCJ4eOSPI",
        id="3-pool-password",
    ),
    pytest.param(
        "ascii",
        "aecccd9ca9c2cc8b",
        "bob",
        0,
        [],
        0x30,
        "eyJhbGciOiJIUzI1NiIsImtpZCI6ImFzY2lpIn0.eyJleHAiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwia"
        "XNzIjoiZXhhbXBsZS5vcmciLCJqdGkiOiIzMDMxMzIzMzM0MzUzNjM3MzgzOTNhM2IzYzNkM2UzZiIsInN1YiI6Im"
        "JvYiJ9.9-ZmriJmC0iYYz-smdIPW1RgFmcDf_iqhU8EZQsnv0k",
        id="4-ascii",
    ),
    pytest.param(
        "site1",
        _SITE1_FILE,
        ODD_IDENTITY,
        10,
        [],
        0x40,
        "eyJhbGciOiJIUzI1NiIsImtpZCI6InNpdGUxIn0.eyJleHAiOjE3MDAwMDAwMTAsImlhdCI6MTcwMDAwMDAwMCwia"
        "XNzIjoiZXhhbXBsZS5vcmciLCJqdGkiOiI0MDQxNDI0MzQ0NDU0NjQ3NDg0OTRhNGI0YzRkNGU0ZiIsInN1YiI6In"
        "dlXC9pcmRcIlxcw7xcdFx1MDA3ZnhAZCJ9.Ovp7D8_-SAQdeTs2bJtAnEqNgK3w9aw35UL9gaB3Tvg",
        id="5-odd-identity",
    ),
]


@pytest.mark.parametrize(
    ("key", "file_hex", "identity", "lifetime", "authz", "rand_start", "expected"),
    REFERENCE_VECTORS,
)
def test_rig_reproduces_formats_vectors(
    condor_tools: CondorTools,
    make_condor_pool: MakePool,
    key: str,
    file_hex: str,
    identity: str,
    lifetime: int,
    authz: list[str],
    rand_start: int,
    expected: str,
) -> None:
    """HTCondor's generate_token, clock and RAND_bytes pinned, gives FORMATS.md's tokens."""
    pool = make_condor_pool(trust_domain="example.org", keys=())
    pool.write_key_file(key, bytes.fromhex(file_hex))
    token = condor_tools.mint(
        pool, key, identity, lifetime, authz, fake_time=1_700_000_000, fake_rand_start=rand_start
    )
    assert token == expected
    header_b64, payload_b64, signature_b64 = token.split(".")
    assert signature_b64 == sign(f"{header_b64}.{payload_b64}", hmac_key(pool.secrets[key], key))


# --------------------------------------------------------------------------------------------
# (a) Tokens HTCondor mints pass `htsec token verify`


def _assert_report_matches(report: dict[str, Any], token: str, key: str, authz: list[str]) -> None:
    _, payload, _ = split_token(token)
    assert report["identity"] == payload["sub"]
    # htsec reports null for a token without condor:/ scopes: not restricted, as in HTCondor
    # (no LimitAuthorization), which is not the same as "no authorization at all".
    assert report["authorizations"] == (authz or None)
    assert report["expires"] == payload.get("exp")
    assert report["key"] == key
    assert report["jti"] == payload["jti"]
    assert report["issuer"] == payload["iss"]


@pytest.mark.parametrize(("key", "identity", "lifetime", "authz"), MINT_CASES)
def test_htsec_verifies_condor_token(
    condor_tools: CondorTools,
    htsec_cli: HtsecCli,
    condor_pool: CondorPool,
    key: str,
    identity: str,
    lifetime: int,
    authz: list[str],
) -> None:
    token = condor_tools.mint(condor_pool, key, identity, lifetime, authz)
    result = htsec_cli.verify(condor_pool, token)
    assert result.accepted, result.report
    _assert_report_matches(result.report, token, key, authz)


def test_htsec_verifies_condor_token_odd_identity(
    condor_tools: CondorTools,
    htsec_cli: HtsecCli,
    condor_pool: CondorPool,
) -> None:
    token = condor_tools.mint(condor_pool, "site1", ODD_IDENTITY, 600, ["READ"])
    result = htsec_cli.verify(condor_pool, token)
    assert result.accepted, result.report
    assert result.report["identity"] == ODD_IDENTITY
    _assert_report_matches(result.report, token, "site1", ["READ"])


@pytest.mark.parametrize("knob", [None, "SEC_PASSWORD_FILE"], ids=["default", "password-file"])
def test_htsec_finds_pool_key_like_condor(
    condor_tools: CondorTools,
    htsec_cli: HtsecCli,
    make_condor_pool: MakePool,
    knob: str | None,
) -> None:
    """POOL without SEC_TOKEN_POOL_SIGNING_KEY_FILE: $(SEC_PASSWORD_FILE), else passwords.d/POOL."""
    pool = make_condor_pool(pool_key_knob=knob)
    token = condor_tools.mint(pool, "POOL", "erin@compat.example.org", 600, ["READ"])
    result = htsec_cli.verify(pool, token)
    assert result.accepted, result.report
    _assert_report_matches(result.report, token, "POOL", ["READ"])
    ours = htsec_cli.create(pool, "erin@compat.example.org", "POOL", 600, ["READ"])
    assert condor_tools.handshake(pool, ours).ok


# --------------------------------------------------------------------------------------------
# (b) Tokens `htsec token create` mints are accepted by HTCondor's server


HTSEC_CASES = [
    pytest.param("POOL", "alice@compat.example.org", -1, [], id="pool-plain"),
    pytest.param("POOL", "alice@compat.example.org", 3600, ["READ", "WRITE"], id="pool-life-authz"),
    pytest.param(
        "site1",
        "glidein@cms.example",
        86400,
        ["READ", "ADVERTISE_STARTD", "ADVERTISE_MASTER"],
        id="named-life-authz",
    ),
    pytest.param(
        "site1", "svc/host.example.org@compat.example.org", -1, ["READ"], id="named-authz"
    ),
    pytest.param("site1", "bob@cms.example", 600, [], id="named-life"),
]


@pytest.mark.parametrize(("key", "identity", "lifetime", "authz"), HTSEC_CASES)
def test_condor_accepts_htsec_token(
    condor_tools: CondorTools,
    htsec_cli: HtsecCli,
    condor_pool: CondorPool,
    key: str,
    identity: str,
    lifetime: int,
    authz: list[str],
) -> None:
    token = htsec_cli.create(condor_pool, identity, key, lifetime if lifetime >= 0 else None, authz)
    header, payload, _ = split_token(token)
    assert header["kid"] == key
    assert payload["sub"] == identity
    assert payload["iss"] == condor_pool.trust_domain
    if lifetime >= 0:
        assert payload["exp"] - payload["iat"] == lifetime
    else:
        assert "exp" not in payload

    result = condor_tools.handshake(condor_pool, token)
    assert result.ok, result.error
    assert result.identity == identity
    assert result.policy.get("AuthTokenSubject") == identity
    assert result.policy.get("AuthTokenId") == payload["jti"]
    if authz:
        assert result.policy.get("LimitAuthorization") == ",".join(authz)
    else:
        assert "LimitAuthorization" not in result.policy


def test_htsec_token_layout_matches_condor(
    condor_tools: CondorTools,
    htsec_cli: HtsecCli,
    condor_pool: CondorPool,
) -> None:
    """Same header, same claim names and the same scope string as condor_token_create."""
    authz = ["READ", "ADVERTISE_STARTD"]
    ours = htsec_cli.create(condor_pool, "frank@compat.example.org", "site1", 3600, authz)
    theirs = condor_tools.mint(condor_pool, "site1", "frank@compat.example.org", 3600, authz)
    our_header, our_payload, our_sig = split_token(ours)
    their_header, their_payload, _ = split_token(theirs)
    assert our_header == their_header == {"alg": "HS256", "kid": "site1"}
    assert sorted(our_payload) == sorted(their_payload)
    assert our_payload["scope"] == their_payload["scope"] == scopes(authz)
    assert our_payload["iss"] == their_payload["iss"]
    assert our_payload["exp"] - our_payload["iat"] == 3600
    assert len(our_sig) == 32
    assert "=" not in ours


# --------------------------------------------------------------------------------------------
# (c) A token signed by the wrong key is rejected by both sides


@pytest.mark.parametrize("key", ["POOL", "site1"])
def test_condor_token_with_wrong_key_rejected_by_both(
    condor_tools: CondorTools,
    htsec_cli: HtsecCli,
    make_condor_pool: MakePool,
    key: str,
) -> None:
    issuer_pool, other_pool = make_condor_pool(), make_condor_pool()
    token = condor_tools.mint(issuer_pool, key, "mallory@compat.example.org", 600, ["READ"])
    assert htsec_cli.verify(issuer_pool, token).accepted  # the token itself is fine

    verdict = htsec_cli.verify(other_pool, token)
    assert not verdict.accepted, verdict.report
    assert not condor_tools.handshake(other_pool, token).ok


@pytest.mark.parametrize("key", ["POOL", "site1"])
def test_htsec_token_with_wrong_key_rejected_by_both(
    condor_tools: CondorTools,
    htsec_cli: HtsecCli,
    make_condor_pool: MakePool,
    key: str,
) -> None:
    issuer_pool, other_pool = make_condor_pool(), make_condor_pool()
    token = htsec_cli.create(issuer_pool, "mallory@compat.example.org", key, 600, ["READ"])
    assert condor_tools.handshake(issuer_pool, token).ok  # the token itself is fine

    result = condor_tools.handshake(other_pool, token)
    assert not result.ok
    assert result.identity is None
    assert not htsec_cli.verify(other_pool, token).accepted


def test_forged_signature_rejected_by_both(
    condor_tools: CondorTools,
    htsec_cli: HtsecCli,
    condor_pool: CondorPool,
) -> None:
    """Same claims, HMAC under a key nobody configured."""
    claims = {
        "iat": int(time.time()),
        "iss": condor_pool.trust_domain,
        "jti": secrets.token_hex(16),
        "sub": "root@compat.example.org",
    }
    forged = reference_token(b"guessed secret", "site1", claims)
    assert not htsec_cli.verify(condor_pool, forged).accepted
    assert not condor_tools.handshake(condor_pool, forged).ok


# --------------------------------------------------------------------------------------------
# (d) HTCondor and htsec derive the same HMAC key from the same key file


@pytest.mark.parametrize("key", ["POOL", "site1"])
def test_same_key_file_same_hmac_key(
    condor_tools: CondorTools,
    htsec_cli: HtsecCli,
    condor_pool: CondorPool,
    key: str,
) -> None:
    identity = "grace@compat.example.org"
    theirs = condor_tools.mint(condor_pool, key, identity, 900, ["WRITE"])
    ours = htsec_cli.create(condor_pool, identity, key, 900, ["WRITE"])

    for token in (theirs, ours):
        verdict = htsec_cli.verify(condor_pool, token)
        assert verdict.accepted, verdict.report
        _assert_report_matches(verdict.report, token, key, ["WRITE"])
        result = condor_tools.handshake(condor_pool, token)
        assert result.ok, result.error
        assert result.identity == identity

    # Both HMACs are the one FORMATS.md section 7 describes.
    expected_key = hmac_key(condor_pool.secrets[key], key)
    for token in (theirs, ours):
        header_b64, payload_b64, signature_b64 = token.split(".")
        assert signature_b64 == sign(f"{header_b64}.{payload_b64}", expected_key)


def test_pool_key_is_doubled_named_key_is_not(
    condor_tools: CondorTools,
    htsec_cli: HtsecCli,
    condor_pool: CondorPool,
) -> None:
    """The same file bytes as POOL and as a named key are two different keys, on both sides."""
    file_bytes = condor_pool.key_path("site1").read_bytes()
    condor_pool.write_key_file("POOL", file_bytes)
    condor_pool.write_key_file("twin", file_bytes)

    for key in ("POOL", "twin", "site1"):
        for token in (
            condor_tools.mint(condor_pool, key, "heidi@compat.example.org", 600, []),
            htsec_cli.create(condor_pool, "heidi@compat.example.org", key, 600),
        ):
            assert htsec_cli.verify(condor_pool, token).accepted
            assert condor_tools.handshake(condor_pool, token).ok

    # Sign with the undoubled secret: right for any named key holding these bytes (even under
    # another name), wrong for POOL. And the doubled secret is wrong for a named key.
    secret = condor_pool.secrets["twin"]
    claims = {
        "exp": int(time.time()) + 600,
        "iat": int(time.time()),
        "iss": condor_pool.trust_domain,
        "jti": secrets.token_hex(16),
        "sub": "heidi@compat.example.org",
    }
    undoubled = hmac_key(secret, "twin")
    doubled = hmac_key(secret, "POOL")
    for kid, hmac_secret, valid in [
        ("site1", undoubled, True),
        ("twin", undoubled, True),
        ("POOL", undoubled, False),
        ("twin", doubled, False),
        ("POOL", doubled, True),
    ]:
        token = signed_token(kid, claims, hmac_secret)
        assert htsec_cli.verify(condor_pool, token).accepted is valid, (kid, valid)
        assert condor_tools.handshake(condor_pool, token).ok is valid, (kid, valid)


# --------------------------------------------------------------------------------------------
# Revocation (SEC_TOKEN_REVOCATION_EXPR, FORMATS.md section 7)


def test_rig_condor_revocation_expression(
    condor_tools: CondorTools,
    make_condor_pool: MakePool,
) -> None:
    """True revokes; so do UNDEFINED and errors (HTCondor errs on the side of caution)."""
    pool = make_condor_pool()
    cutoff = int(time.time()) + 3600
    pool.add_config(
        f'SEC_TOKEN_REVOCATION_EXPR = sub =?= "revoked@compat.example.org" && iat <= {cutoff}'
    )
    revoked = condor_tools.mint(pool, "POOL", "revoked@compat.example.org", 600, [])
    kept = condor_tools.mint(pool, "POOL", "kept@compat.example.org", 600, [])
    assert not condor_tools.handshake(pool, revoked).ok
    assert condor_tools.handshake(pool, kept).ok

    undefined = make_condor_pool()
    undefined.add_config("SEC_TOKEN_REVOCATION_EXPR = no_such_claim == 1")
    token = condor_tools.mint(undefined, "POOL", "kept@compat.example.org", 600, [])
    assert not condor_tools.handshake(undefined, token).ok


def test_revocation_expression_applies_on_both_sides(
    condor_tools: CondorTools,
    htsec_cli: HtsecCli,
    condor_pool: CondorPool,
) -> None:
    cutoff = int(time.time()) + 3600
    condor_pool.add_config(
        f'SEC_TOKEN_REVOCATION_EXPR = sub =?= "revoked@compat.example.org" && iat <= {cutoff}'
    )
    for key in ("POOL", "site1"):
        revoked = condor_tools.mint(condor_pool, key, "revoked@compat.example.org", 600, [])
        kept = condor_tools.mint(condor_pool, key, "kept@compat.example.org", 600, [])
        assert not condor_tools.handshake(condor_pool, revoked).ok
        assert condor_tools.handshake(condor_pool, kept).ok
        assert not htsec_cli.verify(condor_pool, revoked).accepted
        assert htsec_cli.verify(condor_pool, kept).accepted
