"""Hostile input: whatever the parser is fed, it raises only htsec's TokenRejected."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htsec._b64 import b64url_encode
from htsec.errors import TokenRejected
from htsec.tokens.idtoken import Verifier, mint, parse_unverified
from htsec.tokens.keys import Keyring

NOW = 1_700_000_000


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Verifier:
    d = tmp_path_factory.mktemp("fuzzkeys")
    kr = Keyring(d, d / "POOL")
    kr.create("POOL", b"\x00fuzz\x00key")
    return Verifier(kr, trust_domain="td")


def _check(verifier: Verifier, token: object) -> None:
    try:
        verifier.verify(token, now=NOW)  # type: ignore[arg-type]
    except TokenRejected as exc:
        assert exc.reason and str(exc)
    with contextlib.suppress(TokenRejected):
        parse_unverified(token)  # type: ignore[arg-type]


FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), st.integers(), st.none()))
def test_arbitrary_input(verifier: Verifier, token: object) -> None:
    _check(verifier, token)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@FUZZ
@given(header=json_values, payload=json_values, sig=st.binary(max_size=40))
def test_structured_garbage(
    verifier: Verifier, header: object, payload: object, sig: bytes
) -> None:
    h = b64url_encode(json.dumps(header).encode())
    p = b64url_encode(json.dumps(payload).encode())
    _check(verifier, f"{h}.{p}.{b64url_encode(sig)}")


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["iat", "iss", "jti", "sub", "exp", "scope", "nbf", "x"]),
        json_values,
        max_size=8,
    ),
    st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "jku"]), json_values, max_size=5),
)
def test_validly_signed_garbage_claims(verifier: Verifier, claims: dict, header: dict) -> None:
    """Correctly signed tokens with arbitrary claims and headers never crash verification."""
    key = verifier.keyring.get("POOL")
    header = {"alg": "HS256", "kid": "POOL", **header}
    import hmac as _h

    si = (
        b64url_encode(json.dumps(header).encode())
        + "."
        + b64url_encode(json.dumps(claims).encode())
    )
    sig = _h.new(key.hmac_key, si.encode(), "sha256").digest()
    _check(verifier, si + "." + b64url_encode(sig))


@FUZZ
@given(st.data())
def test_mutated_valid_token(verifier: Verifier, data: st.DataObject) -> None:
    tok = mint(verifier.keyring.get("POOL"), issuer="td", subject="a@b", lifetime=60, now=NOW)
    i = data.draw(st.integers(0, len(tok) - 1))
    c = data.draw(st.characters(codec="utf-8"))
    mutated = tok[:i] + c + tok[i + 1 :]
    try:
        v = verifier.verify(mutated, now=NOW)
    except TokenRejected:
        return
    # A surviving mutation must be one base64url can absorb (the last character's spare bits).
    assert v.subject == "a@b"


def test_fuzz_fixture_key_with_nul(tmp_path: Path) -> None:
    kr = Keyring(tmp_path, tmp_path / "POOL")
    kr.create("POOL", b"\x00\x00")
    assert (
        kr.get("POOL").hmac_key
        != Keyring(tmp_path, tmp_path / "POOL").create("POOL", b"\x00", replace=True).hmac_key
    )
