"""When to refresh: on the token's real expiry, not on file age (the anchor's fault)."""

from __future__ import annotations

import base64
import json
import random

from hypothesis import given
from hypothesis import strategies as st

from htsec.credmon.policy import Policy, backoff, refresh_due, should_refresh, token_expiry

P = Policy(fraction=0.5, min_remaining=60)


def test_refresh_on_real_expiry_not_file_age() -> None:
    """HTCondor's credmon refreshes when the .use file is older than expires_in x 0.5. A token
    imported late (a 4000 s lifetime, issued 3400 s ago, expiring in 10 min, .use written just
    now) looks fresh by file age but is nearly dead: htsec counts half its lifetime back from
    its expiry, so it was due 1400 s ago and is refreshed at once."""
    now = 1_000_000
    issued, expires = now - 3400, now + 600
    by_file_age = now + 0.5 * 4000  # the anchor's rule: the .use, written now, ages first
    due = refresh_due(expires, issued, P)
    assert due == expires - 2000 == now - 1400
    assert due < now < by_file_age
    assert should_refresh(expires, issued, now, P) is True


def test_not_due_when_fresh() -> None:
    now = 1_000_000
    assert should_refresh(now + 3000, now - 600, now, P) is False
    assert refresh_due(now + 3000, now - 600, P) == now + 3000 - 1800


def test_short_tokens_use_min_remaining() -> None:
    now = 1_000_000
    assert refresh_due(now + 100, now - 20, P) == now + 100 - 60
    assert should_refresh(None, None, now, P) is True  # no access token yet


@given(st.integers(0, 40))
def test_backoff_bounded_and_jittered(failures: int) -> None:
    rng = random.Random(failures)
    d = backoff(failures, P, rng)
    assert 0.5 * min(P.backoff_max, P.backoff_base * 2**failures) <= d <= 1.5 * P.backoff_max


def jwt(**claims: object) -> str:
    def part(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'ES256', 'typ': 'at+jwt'})}.{part(claims)}.c2ln"


def test_expiry_is_counted_on_this_hosts_clock() -> None:
    """Clock skew: a provider two hours behind issues a 20-minute JWT whose exp is already past
    here. expires_in, or exp - iat, is a lifetime and immune to that; exp alone is not."""
    now = 1_000_000
    behind = now - 7200
    skewed = jwt(iat=behind, exp=behind + 1200)
    assert token_expiry({"access_token": skewed, "expires_in": 1200}, now, P) == now + 1200
    assert token_expiry({"access_token": skewed}, now, P) == now + 1200
    assert token_expiry({"access_token": jwt(exp=now + 300)}, now, P) == now + 300
    assert token_expiry({"access_token": "opaque"}, now, P) == now + P.default_lifetime
    # Nonsense falls back rather than crashing: negative expires_in, bool, exp before iat.
    assert token_expiry({"access_token": "x", "expires_in": -5}, now, P) == now + 3600
    assert token_expiry({"access_token": "x", "expires_in": True}, now, P) == now + 3600
    assert token_expiry({"access_token": "x", "expires_in": float("inf")}, now, P) == now + 3600
    assert token_expiry({"access_token": "x", "expires_in": 10**30}, now, P) == now + 3600
    assert token_expiry({"access_token": jwt(iat=now, exp=now - 1)}, now, P) == now - 1


@given(st.text(max_size=300), st.one_of(st.none(), st.integers(), st.floats(), st.text()))
def test_expiry_of_any_response_is_an_int(token: str, expires_in: object) -> None:
    body = {"access_token": token, "expires_in": expires_in}
    expiry = token_expiry(body, 1_000_000, P)
    assert isinstance(expiry, int) and 0 <= expiry <= 1_000_000 + 366 * 86400


@given(st.dictionaries(st.sampled_from(["iat", "exp", "x"]), st.integers() | st.text() | st.none()))
def test_expiry_of_any_jwt_claims(claims: dict[str, object]) -> None:
    expiry = token_expiry({"access_token": jwt(**claims)}, 1_000_000, P)
    assert isinstance(expiry, int) and 0 <= expiry <= 1_000_000 + 366 * 86400
