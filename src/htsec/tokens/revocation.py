"""Token revocation: recorded rules plus HTCondor's ``SEC_TOKEN_REVOCATION_EXPR``.

HTCondor (FORMATS.md section 7; ``src/condor_io/condor_auth_passwd.cpp`` ``isTokenRevoked``)
evaluates ``SEC_TOKEN_REVOCATION_EXPR`` against a ClassAd made of the payload's top-level scalar
claims; true, an error or UNDEFINED all mean revoked, so rules are written with ``=?=``.
htsec evaluates the same expressions with HTCondor's own ClassAd library (``classad2``).

Recorded rules come in three kinds: a ``jti``; an identity (its tokens issued at or before the
moment of revocation, i.e. ``sub =?= ID && iat <= T``); an expression. Each can be exported as
one ClassAd expression for the ``SEC_TOKEN_REVOCATION_EXPR`` of real HTCondor daemons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import classad2

from htsec._time import utc_text
from htsec.errors import UsageError

__all__ = ["ExprRule", "RevocationSet", "claims_ad", "compile_expr", "expr_revokes"]


def claims_ad(claims: Mapping[str, Any]) -> classad2.ClassAd:
    """The ClassAd of a token's top-level scalar claims."""
    ad = classad2.ClassAd()
    for name, value in claims.items():
        if isinstance(value, bool | int | float | str) and name.isidentifier():
            try:
                ad[name] = value
            except (ValueError, TypeError, OverflowError):
                continue
    return ad


def compile_expr(text: str) -> classad2.ExprTree:
    """Parse a ClassAd expression; a syntax error is a :class:`UsageError`."""
    try:
        expr = classad2.ExprTree(text)
    except Exception:  # classad2 raises ClassAdException, which it does not export
        raise UsageError(f"not a valid ClassAd expression: {text!r}") from None
    return expr


def expr_revokes(expr: classad2.ExprTree, ad: classad2.ClassAd) -> bool:
    """HTCondor's rule: only a false (or 0) result leaves the token valid."""
    try:
        result = expr.eval(ad)
    except Exception:
        return True
    if isinstance(result, bool):
        return result
    if isinstance(result, int | float) and not isinstance(result, bool):
        return result != 0
    return True


@dataclass(frozen=True)
class ExprRule:
    text: str
    expr: classad2.ExprTree
    label: str


class RevocationSet:
    """Revocation rules loaded once, checked fast: jti and identity lookups before ClassAds."""

    def __init__(
        self,
        *,
        jtis: Mapping[str, str] | None = None,
        identities: Mapping[str, Sequence[int]] | None = None,
        exprs: Sequence[ExprRule] = (),
    ) -> None:
        self.jtis = dict(jtis or {})
        self.identities = {k: max(v) for k, v in (identities or {}).items() if v}
        self.exprs = list(exprs)

    def __len__(self) -> int:
        return len(self.jtis) + len(self.identities) + len(self.exprs)

    def check(self, claims: Mapping[str, Any]) -> str | None:
        """None, or why a token with these claims is revoked."""
        jti = claims.get("jti")
        if isinstance(jti, str) and jti in self.jtis:
            return f"token {jti} was revoked ({self.jtis[jti]})"
        sub, iat = claims.get("sub"), claims.get("iat")
        if isinstance(sub, str) and sub in self.identities and isinstance(iat, int):
            cutoff = self.identities[sub]
            if iat <= cutoff:
                return f"tokens of {sub} issued up to {utc_text(cutoff)} were revoked"
        if self.exprs:
            ad = claims_ad(claims)
            for rule in self.exprs:
                if expr_revokes(rule.expr, ad):
                    return f"revoked by {rule.label}: {rule.text}"
        return None

    def condor_expr(self) -> str:
        """All rules as one expression for HTCondor's ``SEC_TOKEN_REVOCATION_EXPR``."""
        parts = [f"jti =?= {classad2.quote(j)}" for j in sorted(self.jtis)]
        parts += [
            f"(sub =?= {classad2.quote(s)} && iat <= {t})"
            for s, t in sorted(self.identities.items())
        ]
        parts += [f"({r.text})" for r in self.exprs]
        return " || ".join(parts) if parts else "false"
