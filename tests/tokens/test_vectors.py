"""FORMATS.md section 7 reference vectors, produced by HTCondor 25.14.1's own library
(``Condor_Auth_Passwd::generate_token`` with the clock fixed at iat = 1700000000 and the jti
fixed, TRUST_DOMAIN = example.org). htsec must derive the same HMAC keys and mint the same
tokens byte for byte, and its verifier must accept them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from htsec._b64 import b64url_decode
from htsec.tokens.idtoken import Verifier, condor_json, mint
from htsec.tokens.keys import Keyring, SigningKey, derive_hmac_key, scramble, unscramble

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "idtokens.json").read_text())


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["name"])
def test_hmac_key_derivation(v: dict) -> None:
    file_bytes = bytes.fromhex(v["key_file_hex"])
    assert derive_hmac_key(file_bytes, v["key"]).hex() == v["hmac_key_hex"]


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["name"])
def test_mint_matches_htcondor_byte_for_byte(v: dict) -> None:
    key = SigningKey(v["key"], Path("/unused"), bytes.fromhex(v["hmac_key_hex"]))
    token = mint(
        key,
        issuer="example.org",
        subject=v["sub"],
        lifetime=v["lifetime"],
        authz=v["authz"],
        now=1700000000,
        jti=v["jti"],
    )
    assert token == v["token"]


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["name"])
def test_verifier_accepts_htcondor_tokens(v: dict, tmp_path: Path) -> None:
    keyring = Keyring(tmp_path / "passwords.d", tmp_path / "passwords.d" / "POOL")
    keyring.create(v["key"], unscramble(bytes.fromhex(v["key_file_hex"])))
    assert (keyring.path_of(v["key"])).read_bytes().hex() == v["key_file_hex"]
    ok = Verifier(keyring, trust_domain="example.org").verify(v["token"], now=1700000000)
    assert ok.subject == v["sub"]
    assert ok.kid == v["key"]
    assert list(ok.authorizations or []) == v["authz"]


def test_vector5_payload_escaping() -> None:
    """picojson writes '/' as '\\/', TAB as '\\t', DEL as '\\u007f', UTF-8 raw."""
    v = VECTORS["vectors"][4]
    payload = b64url_decode(v["token"].split(".")[1].encode())
    assert payload.decode() == v["payload"]
    claims = json.loads(payload)
    assert condor_json(claims).decode() == v["payload"]


def test_pool_secret_is_doubled_and_named_keys_are_not() -> None:
    file_bytes = scramble(b"password")
    assert file_bytes.hex() == "aecccd9ca9c2cc8b"
    assert derive_hmac_key(file_bytes, "POOL") != derive_hmac_key(file_bytes, "ascii")
