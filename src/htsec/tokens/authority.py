"""The token authority of one configuration: keys, minting with records, verification."""

from __future__ import annotations

import functools
import getpass
import re
import socket
from collections.abc import Sequence

from sqlalchemy.orm import Session

from htsec.config import Settings
from htsec.errors import UsageError
from htsec.store import Store, open_store
from htsec.tokens.idtoken import VerifiedToken, Verifier, mint, normalize_authz
from htsec.tokens.keys import POOL, Keyring
from htsec.tokens.registry import Registry
from htsec.tokens.revocation import claims_ad, compile_expr, expr_revokes

__all__ = ["Authority", "caller_name", "validate_identity"]

_IDENTITY = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+")
MAX_IDENTITY = 256


def validate_identity(identity: str) -> str:
    """An identity is ``user@domain``, as ``condor_token_create -identity`` documents."""
    if len(identity) > MAX_IDENTITY or not _IDENTITY.fullmatch(identity):
        raise UsageError(
            f"identity {identity!r} is not of the form user@domain "
            "(no spaces or control characters, one '@', at most 256 characters)"
        )
    return identity


def caller_name() -> str:
    """Who runs this process, for the minted-by column: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Authority:
    """Mint, verify and revoke the ID tokens of one configuration."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.keyring = Keyring(settings.password_dir, settings.pool_key_file)
        self._store = store
        self._condor_expr = (
            compile_expr(settings.revocation_expr) if settings.revocation_expr else None
        )

    @functools.cached_property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings.database_url)
        return self._store

    @functools.cached_property
    def registry(self) -> Registry:
        return Registry(self.store)

    def mint(
        self,
        *,
        identity: str,
        key: str = POOL,
        lifetime: int | None = None,
        authz: Sequence[str] = (),
        minted_by: str | None = None,
        via: str = "cli",
        now: int | None = None,
        session: Session | None = None,
    ) -> str:
        """Mint a token for ``identity`` and record it in the registry (within ``session``
        when the caller already holds a transaction: SQLite allows one writer at a time)."""
        validate_identity(identity)
        signing_key = self.keyring.get(key)
        token = mint(
            signing_key,
            issuer=self.settings.trust_domain,
            subject=identity,
            lifetime=lifetime,
            authz=normalize_authz(authz),
            now=now,
        )
        self.registry.record(
            token, minted_by=minted_by or caller_name(), minted_via=via, session=session
        )
        return token

    def verifier(self, *, use_store: bool = True) -> Verifier:
        """A verifier applying the recorded revocations and ``SEC_TOKEN_REVOCATION_EXPR``."""
        recorded = self.registry.revocations() if use_store else None
        condor_expr = self._condor_expr
        source = self.settings.config_source

        def revoked(tok: VerifiedToken) -> str | None:
            if recorded is not None:
                why = recorded.check(tok.claims)
                if why:
                    return why
            if condor_expr is not None and expr_revokes(condor_expr, claims_ad(tok.claims)):
                return f"revoked by SEC_TOKEN_REVOCATION_EXPR (in {source})"
            return None

        return Verifier(
            self.keyring,
            trust_domain=self.settings.trust_domain,
            max_age=self.settings.max_age,
            revocation=revoked,
        )

    def verify(self, token: str, *, now: float | None = None) -> VerifiedToken:
        return self.verifier().verify(token, now=now)
