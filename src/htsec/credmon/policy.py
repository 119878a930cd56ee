"""When to refresh: the refresh policy and the pure decisions the engine takes with it.

:func:`should_refresh` decides on the access token's real expiry (never on a file's age, as
HTCondor's ``condor_credmon_oauth`` does, FORMATS.md section 3); :func:`token_expiry` reads
that expiry from a token response on this host's clock; :func:`backoff` spaces the retries of
a failing credential.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from htsec._b64 import b64url_decode

__all__ = ["Policy", "backoff", "refresh_due", "should_refresh", "token_expiry"]


@dataclass(frozen=True)
class Policy:
    """When and how to refresh. No knob sets these (the daemon uses the defaults; tests pass
    their own); the credmon's one tuning knob, ``HTSEC_CREDMON_RATE``, is a provider's
    (:mod:`htsec.credmon.providers`)."""

    fraction: float = 0.5  # refresh once less than this share of the lifetime is left
    min_remaining: int = 60  # ... or less than this many seconds
    default_lifetime: int = 3600  # a token response without expires_in (and not a JWT)
    min_rest: int = 10  # wait after a token that is already due when it arrives
    lease: int = 60  # seconds a claim holds a credential (longer than any refresh)
    timeout: float = 10.0  # per HTTP request
    concurrency: int = 16  # refreshes in flight
    batch: int = 64  # credentials claimed at once
    backoff_base: float = 10.0
    backoff_max: float = 3600.0


def refresh_due(expires_at: int | None, issued_at: int | None, policy: Policy) -> int:
    """The time at which a token expiring at ``expires_at`` should be refreshed."""
    if expires_at is None:
        return 0
    lifetime = max(0, expires_at - issued_at if issued_at is not None else policy.default_lifetime)
    # Refresh once less than `fraction` of the lifetime is left, and at least `min_remaining`
    # seconds early -- but never earlier than half-way, or short tokens would never rest.
    margin = max(policy.fraction * lifetime, min(policy.min_remaining, 0.5 * lifetime))
    return expires_at - int(margin)


def should_refresh(
    expires_at: int | None, issued_at: int | None, now: float, policy: Policy
) -> bool:
    """Pure decision: is this access token due (or missing)?"""
    return now >= refresh_due(expires_at, issued_at, policy)


def backoff(failures: int, policy: Policy, rng: random.Random) -> float:
    """Jittered exponential back-off: base x 2^failures, at most backoff_max, times 0.5-1.5."""
    base = min(policy.backoff_max, policy.backoff_base * 2.0 ** min(failures, 20))
    return float(base * rng.uniform(0.5, 1.5))


def _jwt_times(token: str) -> tuple[int | None, int | None]:
    """``iat`` and ``exp`` of a JWT access token (unverified: only used for timing)."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 16384:
        return None, None
    try:
        claims = json.loads(b64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(claims, dict):
        return None, None
    iat, exp = claims.get("iat"), claims.get("exp")
    return (
        iat if isinstance(iat, int) and not isinstance(iat, bool) else None,
        exp if isinstance(exp, int) and not isinstance(exp, bool) else None,
    )


_MAX_LIFETIME = 366 * 86400  # longer-lived "access tokens" are not believed


def token_expiry(body: dict[str, Any], now: int, policy: Policy) -> int:
    """When the access token in a token response expires, on this host's clock.

    ``expires_in`` (RFC 6749 section 5.1) is relative, so the provider's clock does not matter.
    Without it, a JWT's lifetime ``exp - iat`` is counted from now -- the provider's clock may
    be off by hours, its ``exp`` alone could already be past here; ``exp`` alone is used only
    without ``iat``. Else the policy's default lifetime."""
    expires_in = body.get("expires_in")
    if (
        isinstance(expires_in, int | float)
        and not isinstance(expires_in, bool)
        and 0 <= expires_in <= _MAX_LIFETIME  # also false for NaN; JSON's 1e999 is inf
    ):
        return now + int(expires_in)
    iat, exp = _jwt_times(body["access_token"])
    if iat is not None and exp is not None and 0 < exp - iat <= _MAX_LIFETIME:
        return now + (exp - iat)
    if exp is not None:
        return max(0, min(exp, now + _MAX_LIFETIME))  # it goes into a 64-bit column
    return now + policy.default_lifetime
