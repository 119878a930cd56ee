"""The issued-token registry and recorded revocations, kept in the store.

Every mint is recorded (jti, sub, kid, scope, iat, exp, minted-by); the token itself never is.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from htsec.errors import UsageError
from htsec.store import Store
from htsec.store.models import IssuedToken, Revocation
from htsec.tokens.idtoken import parse_unverified
from htsec.tokens.revocation import ExprRule, RevocationSet, compile_expr

__all__ = ["IssuedRecord", "Registry"]


@dataclass(frozen=True)
class IssuedRecord:
    jti: str
    sub: str
    kid: str
    scope: str | None
    iat: int
    exp: int | None
    minted_by: str
    minted_via: str


class Registry:
    """Issued tokens and revocations of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(
        self, token: str, *, minted_by: str, minted_via: str, session: Session | None = None
    ) -> IssuedRecord:
        """Record a token htsec just minted (by its claims), in ``session`` if given."""
        _, claims = parse_unverified(token)
        rec = IssuedRecord(
            jti=claims["jti"],
            sub=claims["sub"],
            kid=_kid(token),
            scope=claims.get("scope"),
            iat=claims["iat"],
            exp=claims.get("exp"),
            minted_by=minted_by,
            minted_via=minted_via,
        )
        if session is not None:
            session.add(IssuedToken(**rec.__dict__))
            return rec
        with self.store.session() as s:
            s.add(IssuedToken(**rec.__dict__))
        return rec

    def issued(
        self, *, identity: str | None = None, kid: str | None = None, live_at: int | None = None
    ) -> list[IssuedRecord]:
        q = select(IssuedToken).order_by(IssuedToken.iat, IssuedToken.jti)
        if identity is not None:
            q = q.where(IssuedToken.sub == identity)
        if kid is not None:
            q = q.where(IssuedToken.kid == kid)
        if live_at is not None:
            q = q.where(or_(IssuedToken.exp.is_(None), IssuedToken.exp >= live_at))
        with self.store.session() as s:
            return [_record(row) for row in s.scalars(q)]

    def count_live(self, kid: str, now: int | None = None) -> int:
        """Issued tokens of key ``kid`` that have not expired and are not revoked."""
        t = int(time.time()) if now is None else now
        revoked = self.revocations()
        n = 0
        for rec in self.issued(kid=kid, live_at=t):
            claims = {k: v for k, v in rec.__dict__.items() if v is not None}
            if revoked.check(claims) is None:
                n += 1
        return n

    def revoke(
        self,
        *,
        kind: str,
        value: str,
        by: str,
        reason: str | None = None,
        now: int | None = None,
    ) -> int:
        """Record a revocation; returns how many recorded live tokens it newly covers."""
        if kind not in ("jti", "identity", "expr"):
            raise UsageError(f"unknown revocation kind {kind!r}")
        if not value:
            raise UsageError(f"an empty {kind} cannot be revoked")
        if kind == "expr":
            compile_expr(value)
        t = int(time.time()) if now is None else now
        before = self.revocations()
        with self.store.session() as s:
            s.add(Revocation(kind=kind, value=value, created_at=t, created_by=by, reason=reason))
        after = self.revocations()
        n = 0
        for rec in self.issued(live_at=t):
            claims = {k: v for k, v in rec.__dict__.items() if v is not None}
            if before.check(claims) is None and after.check(claims) is not None:
                n += 1
        return n

    def revocations(self) -> RevocationSet:
        jtis: dict[str, str] = {}
        identities: dict[str, list[int]] = {}
        exprs: list[ExprRule] = []
        with self.store.session() as s:
            for r in s.scalars(select(Revocation).order_by(Revocation.id)):
                if r.kind == "jti":
                    jtis[r.value] = r.reason or f"by {r.created_by}"
                elif r.kind == "identity":
                    identities.setdefault(r.value, []).append(r.created_at)
                else:
                    exprs.append(ExprRule(r.value, compile_expr(r.value), f"rule #{r.id}"))
        return RevocationSet(jtis=jtis, identities=identities, exprs=exprs)

    def rules(self) -> Sequence[Revocation]:
        with self.store.session() as s:
            return list(s.scalars(select(Revocation).order_by(Revocation.id)))


def _kid(token: str) -> str:
    header, _ = parse_unverified(token)
    return str(header["kid"])


def _record(row: IssuedToken) -> IssuedRecord:
    return IssuedRecord(
        jti=row.jti,
        sub=row.sub,
        kid=row.kid,
        scope=row.scope,
        iat=row.iat,
        exp=row.exp,
        minted_by=row.minted_by,
        minted_via=row.minted_via,
    )
