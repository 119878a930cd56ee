"""When to refresh: on the token's real expiry, not on file age (the anchor's fault)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from htsec.credmon.refresh import Policy, backoff, refresh_due, should_refresh

P = Policy(fraction=0.5, min_remaining=60)


def test_refresh_on_real_expiry_not_file_age() -> None:
    """HTCondor's credmon refreshes when the .use file is older than expires_in x 0.5. A token
    imported late (issued 50 min ago, expiring in 10 min, .use written just now) looks fresh by
    file age but is nearly dead: htsec refreshes it at once."""
    now = 1_000_000
    issued, expires = now - 3000, now + 600
    file_age_rule = (now - now) > 0.5 * 3600  # the anchor: .use age vs expires_in
    assert file_age_rule is False
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
