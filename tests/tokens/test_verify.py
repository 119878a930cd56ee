"""Strict verification: every rejection is a TokenRejected with a precise reason
(DESIGN.md "Security invariants"; FORMATS.md section 7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from pathlib import Path

import pytest

from htsec._b64 import b64url_decode, b64url_encode
from htsec.errors import TokenRejected
from htsec.tokens.idtoken import MAX_TOKEN_BYTES, Verifier, mint
from htsec.tokens.keys import Keyring

NOW = 1_700_000_000
TD = "pool.example.org"


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    kr = Keyring(tmp_path / "passwords.d", tmp_path / "passwords.d" / "POOL")
    kr.create("POOL")
    kr.create("site-a")
    return kr


@pytest.fixture
def verifier(keyring: Keyring) -> Verifier:
    return Verifier(keyring, trust_domain=TD)


def forge(
    keyring: Keyring,
    header: dict | bytes,
    claims: dict | bytes,
    *,
    key: str = "POOL",
    alg: str = "sha256",
) -> str:
    """Sign arbitrary header/payload bytes with a real key (to reach the later checks)."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    si = b64url_encode(h) + "." + b64url_encode(p)
    sig = hmac.new(keyring.get(key).hmac_key, si.encode(), alg).digest()
    return si + "." + b64url_encode(sig)


def claims(**over: object) -> dict:
    c = {"iat": NOW, "iss": TD, "jti": "ab" * 16, "sub": "alice@pool.example.org"}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def reason(verifier: Verifier, token: str, now: int = NOW) -> str:
    with pytest.raises(TokenRejected) as info:
        verifier.verify(token, now=now)
    assert str(info.value)  # always a message for a person
    return info.value.reason


def test_good_token(verifier: Verifier, keyring: Keyring) -> None:
    tok = mint(
        keyring.get("POOL"), issuer=TD, subject="alice@x", lifetime=60, authz=["READ"], now=NOW
    )
    v = verifier.verify(tok, now=NOW + 60)
    assert (v.subject, v.authorizations, v.exp) == ("alice@x", ("READ",), NOW + 60)


def test_layout_variants_htcondor_accepts(verifier: Verifier, keyring: Keyring) -> None:
    """Any JSON layout with the right signature is fine (typ, spaces, key order, nbf)."""
    tok = forge(
        keyring,
        {"typ": "JWT", "kid": "POOL", "alg": "HS256"},
        b'{ "sub" : "a@b", "jti":"x", "iss":"pool.example.org", "iat": 1700000000, "nbf": 1 }',
    )
    assert verifier.verify(tok, now=NOW).subject == "a@b"


@pytest.mark.parametrize("alg", ["none", "None", "HS384", "HS512", "RS256", "ES256", None, 5])
def test_only_hs256(verifier: Verifier, keyring: Keyring, alg: object) -> None:
    tok = forge(keyring, {"alg": alg, "kid": "POOL"}, claims())
    assert reason(verifier, tok) == "bad_algorithm"


def test_alg_none_without_signature(verifier: Verifier) -> None:
    h = b64url_encode(b'{"alg":"none","kid":"POOL"}')
    p = b64url_encode(json.dumps(claims()).encode())
    assert reason(verifier, f"{h}.{p}.") == "malformed"
    assert reason(verifier, f"{h}.{p}") == "malformed"


def test_hs_rs_key_confusion(verifier: Verifier, keyring: Keyring) -> None:
    """An RS256 header signed with HMAC (the classic confusion) is refused by the allowlist."""
    tok = forge(keyring, {"alg": "RS256", "kid": "POOL"}, claims())
    assert reason(verifier, tok) == "bad_algorithm"


@pytest.mark.parametrize("param", ["crit", "jku", "jwk", "x5u", "x5c"])
def test_forbidden_headers(verifier: Verifier, keyring: Keyring, param: str) -> None:
    tok = forge(keyring, {"alg": "HS256", "kid": "POOL", param: ["exp"]}, claims())
    assert reason(verifier, tok) == "forbidden_header"


@pytest.mark.parametrize(
    "kid", ["../POOL", "a/b", "/etc/passwd", "..", "PO\x00OL", ".hidden", "", 7]
)
def test_path_like_kid(verifier: Verifier, keyring: Keyring, kid: object) -> None:
    tok = forge(keyring, {"alg": "HS256", "kid": kid}, claims())
    assert reason(verifier, tok) == "bad_kid"


def test_unknown_kid(verifier: Verifier, keyring: Keyring) -> None:
    tok = forge(keyring, {"alg": "HS256", "kid": "nosuchkey"}, claims())
    assert reason(verifier, tok) == "unknown_key"


def test_wrong_key(verifier: Verifier, keyring: Keyring) -> None:
    tok = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims(), key="site-a")
    assert reason(verifier, tok) == "bad_signature"


def test_rotated_key(verifier: Verifier, keyring: Keyring) -> None:
    tok = mint(keyring.get("site-a"), issuer=TD, subject="a@b", now=NOW)
    verifier.verify(tok, now=NOW)
    keyring.create("site-a", replace=True)
    assert reason(verifier, tok) == "bad_signature"


def test_unsafe_key_file(verifier: Verifier, keyring: Keyring) -> None:
    tok = mint(keyring.get("site-a"), issuer=TD, subject="a@b", now=NOW)
    os.chmod(keyring.path_of("site-a"), 0o640)
    keyring._cache.clear()
    assert reason(verifier, tok) == "key_unusable"


def test_oversize(verifier: Verifier, keyring: Keyring) -> None:
    tok = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims(pad="x" * MAX_TOKEN_BYTES))
    assert reason(verifier, tok) == "too_large"


def test_padding_rejected(verifier: Verifier, keyring: Keyring) -> None:
    tok = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims())
    h, p, s = tok.split(".")
    padded = base64.urlsafe_b64encode(base64.urlsafe_b64decode(s + "==")).decode()
    assert padded.endswith("=")
    assert reason(verifier, f"{h}.{p}.{padded}") == "malformed"


def test_iat_skew(verifier: Verifier, keyring: Keyring) -> None:
    ok = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims(iat=NOW + 60))
    verifier.verify(ok, now=NOW)
    late = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims(iat=NOW + 61))
    assert reason(verifier, late) == "future_iat"


def test_expired_without_leeway(verifier: Verifier, keyring: Keyring) -> None:
    tok = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims(exp=NOW + 10))
    verifier.verify(tok, now=NOW + 10)
    assert reason(verifier, tok, now=NOW + 11) == "expired"


def test_wrong_issuer(verifier: Verifier, keyring: Keyring) -> None:
    tok = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims(iss="other.org"))
    assert reason(verifier, tok) == "wrong_issuer"


@pytest.mark.parametrize(
    "bad",
    [
        claims(jti=None),
        claims(jti=""),
        claims(iss=None),
        claims(sub=None),
        claims(iat=None),
        claims(iat="1700000000"),
        claims(iat=True),
        claims(iat=1.5e9),
        claims(exp="soon"),
        claims(scope=["condor:/READ"]),
    ],
)
def test_bad_claims(verifier: Verifier, keyring: Keyring, bad: dict) -> None:
    tok = forge(keyring, {"alg": "HS256", "kid": "POOL"}, bad)
    assert reason(verifier, tok) == "bad_claims"


def test_duplicate_members(verifier: Verifier, keyring: Keyring) -> None:
    payload = b'{"iat":1700000000,"iss":"pool.example.org","jti":"x","sub":"a@b","sub":"root@b"}'
    tok = forge(keyring, {"alg": "HS256", "kid": "POOL"}, payload)
    assert reason(verifier, tok) == "malformed"


def test_max_age(keyring: Keyring) -> None:
    v = Verifier(keyring, trust_domain=TD, max_age=100)
    tok = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims())
    v.verify(tok, now=NOW + 100)
    assert reason(v, tok, now=NOW + 101) == "too_old"


def test_revocation_callback(keyring: Keyring) -> None:
    v = Verifier(
        keyring, trust_domain=TD, revocation=lambda t: "gone" if t.subject == "a@b" else None
    )
    assert (
        reason(v, forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims(sub="a@b"))) == "revoked"
    )
    v.verify(forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims(sub="c@d")), now=NOW)


def test_signature_checked_before_claims(verifier: Verifier, keyring: Keyring) -> None:
    """An unsigned payload is never interpreted: garbage claims with a bad signature say so."""
    h = b64url_encode(b'{"alg":"HS256","kid":"POOL"}')
    p = b64url_encode(b"not json")
    s = b64url_encode(hashlib.sha256(b"x").digest())
    assert reason(verifier, f"{h}.{p}.{s}") == "bad_signature"


def test_scope_split_on_commas_like_htcondor(verifier: Verifier, keyring: Keyring) -> None:
    tok = forge(
        keyring,
        {"alg": "HS256", "kid": "POOL"},
        claims(scope="condor:/READ,condor:/WRITE storage.read:/ condor:/DAEMON"),
    )
    assert verifier.verify(tok, now=NOW).authorizations == ("READ", "WRITE", "DAEMON")


@pytest.mark.parametrize(
    "over",
    [{"iat": 10**400}, {"exp": -(10**20)}, {"iat": -(10**20)}, {"exp": 2**63}],
    ids=["iat-huge", "exp-negative", "iat-negative", "exp-2^63"],
)
def test_out_of_range_times_are_rejected_not_crashes(
    verifier: Verifier, keyring: Keyring, over: dict[str, int]
) -> None:
    token = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims(**over))
    assert reason(verifier, token) == "bad_claims"
    aged = Verifier(keyring, trust_domain=TD, max_age=60)
    assert reason(aged, token) == "bad_claims"


def test_null_exp_is_not_no_expiry(verifier: Verifier, keyring: Keyring) -> None:
    payload = json.dumps({**claims(), "exp": None}).encode()
    token = forge(keyring, {"alg": "HS256", "kid": "POOL"}, payload)
    assert reason(verifier, token) == "bad_claims"


def test_one_spelling_per_signature(verifier: Verifier, keyring: Keyring) -> None:
    token = forge(keyring, {"alg": "HS256", "kid": "POOL"}, claims())
    assert verifier.verify(token, now=NOW).subject == "alice@pool.example.org"
    head, _, sig = token.rpartition(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    others = [c for c in alphabet if c != sig[-1]]
    same = [
        c for c in others if b64url_decode((sig[:-1] + c).encode()) == b64url_decode(sig.encode())
    ]
    assert len(same) == 3  # 43 characters carry 256 bits: 2 spare bits in the last one
    for c in same:
        assert reason(verifier, f"{head}.{sig[:-1]}{c}") == "malformed"
    assert b64url_encode(b64url_decode(sig.encode())) == sig


def test_unreadable_key_is_a_rejection(keyring: Keyring, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verifier running as another user meets a root-owned 0600 key (open() fails with
    EACCES after the mode checks pass): a clean rejection, not a traceback. Simulated with a
    failing open(): this machine's interpreter lives under /root, so a child process cannot
    drop to another user and still run it."""
    import htsec._fs

    token = forge(keyring, {"alg": "HS256", "kid": "site-a"}, claims(), key="site-a")
    pool = keyring.path_of("POOL")
    fresh = Verifier(Keyring(pool.parent, pool), trust_domain=TD)  # nothing cached yet

    def denied(*args: object, **kw: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(htsec._fs, "open", denied, raising=False)
    assert reason(fresh, token) == "key_unusable"
