"""The web layer's verifier cache (htsec.web.verifier): a revocation recorded by another
process is applied once the cached verifier is older than its maximum age, never before;
time is an injected clock, the revocations are real rows in a real store."""

from __future__ import annotations

import pytest

from htsec.errors import TokenRejected
from htsec.tokens.authority import Authority
from htsec.tokens.idtoken import Verifier
from htsec.web.verifier import MAX_AGE, VerifierCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_revocation_applies_once_the_verifier_is_older_than_its_max_age(
    authority: Authority,
) -> None:
    clock = Clock()
    built: list[Verifier] = []

    def build() -> Verifier:
        built.append(authority.verifier())
        return built[-1]

    cache = VerifierCache(build, clock=clock)
    token = authority.mint(identity="mallory@pool.example.org")
    assert cache.get().verify(token).subject == "mallory@pool.example.org"
    jti = authority.verify(token).jti
    authority.registry.revoke(kind="jti", value=jti, by="admin@pool.example.org")

    clock.now += MAX_AGE  # not older than its maximum age: still the first verifier
    assert cache.get().verify(token).subject == "mallory@pool.example.org"
    assert len(built) == 1

    clock.now += 0.001
    with pytest.raises(TokenRejected) as rejected:
        cache.get().verify(token)
    assert rejected.value.reason == "revoked"
    assert len(built) == 2
    cache.get()
    assert len(built) == 2  # rebuilt once, then reused


def test_max_age_is_a_parameter(authority: Authority) -> None:
    clock = Clock()
    calls = 0

    def build() -> Verifier:
        nonlocal calls
        calls += 1
        return authority.verifier()

    cache = VerifierCache(build, max_age=0.0, clock=clock)
    cache.get()
    cache.get()
    assert calls == 1  # same instant
    clock.now += 0.5
    cache.get()
    assert calls == 2
