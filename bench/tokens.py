"""Benchmark: ID token mint and verify throughput on one core, beside a hand-written floor.

The floor does only what any HS256 token needs (json + base64url + hmac, inline, no checks);
htsec's ``mint`` and ``Verifier.verify`` are measured in the same run, as are PyJWT and joserfc
for the dependency choice (docs/dependencies.md). The local SciTokens issuer's ES256 mint (on
joserfc) is measured beside its own floor (cryptography's ECDSA + json + base64url inline, the
issuer's former hand-written path). Prints a table, then one JSON line.

    .venv/bin/python bench/tokens.py [--n 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from htsec.tokens.idtoken import Verifier, mint
from htsec.tokens.keys import Keyring

NOW = int(time.time())


def best_rate(fn: Callable[[], object], n: int, repeat: int) -> float:
    """Operations per second: the best of ``repeat`` runs of ``n`` calls."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=20000, help="calls per run (default 20000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure; the best counts")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    tmp = Path(tempfile.mkdtemp())
    keyring = Keyring(tmp, tmp / "POOL")
    key = keyring.create("POOL")
    verifier = Verifier(keyring, trust_domain="bench.example.org")
    claims = {
        "iat": NOW,
        "iss": "bench.example.org",
        "jti": "0" * 32,
        "sub": "alice@bench.example.org",
        "exp": NOW + 3600,
        "scope": "condor:/READ condor:/WRITE",
    }
    token = mint(
        key,
        issuer="bench.example.org",
        subject="alice@bench.example.org",
        lifetime=3600,
        authz=["READ", "WRITE"],
        now=NOW,
    )
    hk = key.hmac_key

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    def floor_mint() -> str:
        si = (
            b64(b'{"alg":"HS256","kid":"POOL"}')
            + "."
            + b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        return si + "." + b64(hmac.digest(hk, si.encode(), "sha256"))

    def floor_verify() -> dict[str, object]:
        h, p, s = token.split(".")
        if not hmac.compare_digest(
            base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)),
            hmac.digest(hk, (h + "." + p).encode(), "sha256"),
        ):
            raise ValueError
        json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
        c: dict[str, object] = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
        if c["exp"] < NOW:  # type: ignore[operator]
            raise ValueError
        return c

    def htsec_mint() -> str:
        return mint(
            key,
            issuer="bench.example.org",
            subject="alice@bench.example.org",
            lifetime=3600,
            authz=("READ", "WRITE"),
            now=NOW,
        )

    def htsec_verify() -> object:
        return verifier.verify(token, now=NOW)

    assert floor_verify()["sub"] == htsec_verify().subject  # type: ignore[attr-defined]
    n, r = args.n, args.repeat
    rows: dict[str, float] = {}
    rows["floor mint"] = best_rate(floor_mint, n, r)
    rows["htsec mint"] = best_rate(htsec_mint, n, r)
    rows["floor verify"] = best_rate(floor_verify, n, r)
    rows["htsec verify"] = best_rate(htsec_verify, n, r)

    extra: dict[str, float] = {}
    try:
        import jwt as pyjwt

        extra["pyjwt mint"] = best_rate(
            lambda: pyjwt.encode(claims, hk, algorithm="HS256", headers={"kid": "POOL"}), n, r
        )
        extra["pyjwt verify"] = best_rate(
            lambda: pyjwt.decode(token, hk, algorithms=["HS256"], options={"verify_aud": False}),
            n,
            r,
        )
    except ImportError:
        pass
    try:
        from joserfc import jwt as jrfc
        from joserfc.jwk import OctKey

        ok = OctKey.import_key(hk)
        extra["joserfc mint"] = best_rate(
            lambda: jrfc.encode({"alg": "HS256", "kid": "POOL"}, claims, ok), n, r
        )
        extra["joserfc verify"] = best_rate(
            lambda: jrfc.decode(token, ok, algorithms=["HS256"]), n, r
        )
    except ImportError:
        pass

    extra.update(issuer_rates(tmp, max(1, n // 10), r))

    print(f"{'':16} {'per second':>12} {'us/token':>9}")
    for name, rate in {**rows, **extra}.items():
        print(f"{name:16} {rate:12,.0f} {1e6 / rate:9.1f}")
    result = {
        "mint_per_s": round(rows["htsec mint"]),
        "verify_per_s": round(rows["htsec verify"]),
        "mint_vs_floor": round(rows["floor mint"] / rows["htsec mint"], 2),
        "verify_vs_floor": round(rows["floor verify"] / rows["htsec verify"], 2),
        "floor_mint_per_s": round(rows["floor mint"]),
        "floor_verify_per_s": round(rows["floor verify"]),
        **{k.replace(" ", "_") + "_per_s": round(v) for k, v in extra.items()},
        "n": n,
        "repeat": r,
    }
    print(
        "mint_vs_floor, verify_vs_floor: htsec's time per token over the floor's (lower is better)"
    )
    print(json.dumps(result))


def issuer_rates(tmp: Path, n: int, r: int) -> dict[str, float]:
    """The local issuer's ES256 mint beside a floor doing the same signature inline."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from htsec.credmon.issuer import IssuerConfig, LocalIssuer, generate_key

    generate_key(tmp / "issuer.pem", "ES256", kid="local")
    config = IssuerConfig(
        provider="scitokens",
        private_key=tmp / "issuer.pem",
        key_id="local",
        algorithm="ES256",
        issuer="https://issuer.example.org",
        authz_template="read:/user/{username} write:/user/{username}",
        lifetime=1200,
        audience=["https://storage.example.org"],
        version="scitoken:2.0",
        use_json=True,
    )
    issuer = LocalIssuer(config)
    key = issuer.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    header = b64(b'{"alg":"ES256","kid":"local","typ":"JWT"}')

    def floor() -> str:
        claims = {
            "sub": "alice",
            "iss": config.issuer,
            "iat": NOW,
            "nbf": NOW,
            "exp": NOW + 1200,
            "jti": os.urandom(16).hex(),
            "scope": "read:/user/alice write:/user/alice",
            "aud": config.audience[0],
            "ver": "scitoken:2.0",
        }
        si = header + "." + b64(json.dumps(claims, separators=(",", ":")).encode())
        rr, ss = decode_dss_signature(key.sign(si.encode(), ec.ECDSA(hashes.SHA256())))
        return si + "." + b64(rr.to_bytes(32, "big") + ss.to_bytes(32, "big"))

    return {
        "issuer floor": best_rate(floor, n, r),
        "issuer joserfc": best_rate(lambda: issuer.mint("alice", now=NOW), n, r),
    }


if __name__ == "__main__":
    main()
