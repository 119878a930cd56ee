"""The token verifier the routes share, rebuilt at most once a second so that revocations
recorded by another process (``htsec token revoke``) reach the server within that time.

The web layer does not build verifiers: the app is handed a :class:`VerifierCache` around a
callable that does (``Authority.verifier``, :mod:`htsec.tokens.authority`), so nothing here
imports the token authority. :class:`Verifier` and :class:`VerifiedCaller` say what the routes
use of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["MAX_AGE", "VerifiedCaller", "Verifier", "VerifierCache"]

#: Seconds a verifier (and the revocations it holds) is used before it is rebuilt.
MAX_AGE = 1.0


class VerifiedCaller(Protocol):
    """A verified ID token as routes use it (:class:`htsec.tokens.idtoken.VerifiedToken`)."""

    @property
    def subject(self) -> str: ...

    @property
    def kid(self) -> str: ...

    @property
    def authorizations(self) -> tuple[str, ...] | None: ...


class Verifier(Protocol):
    """Verifies an ID token or raises :class:`~htsec.errors.TokenRejected`."""

    def verify(self, token: str) -> VerifiedCaller: ...


class VerifierCache:
    """Hands out one verifier, rebuilt by ``build`` once it is older than ``max_age`` seconds
    by ``clock`` (monotonic seconds; tests inject their own)."""

    def __init__(
        self,
        build: Callable[[], Verifier],
        *,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._build = build
        self._max_age = max_age
        self._clock = clock
        self._at = 0.0
        self._verifier: Verifier | None = None

    def get(self) -> Verifier:
        now = self._clock()
        if self._verifier is None or now - self._at > self._max_age:
            self._verifier = self._build()
            self._at = now
        return self._verifier
