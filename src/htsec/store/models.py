"""Tables of the store. Schema changes are Alembic migrations in ``migrations/versions``.

No table ever holds a token or a key: issued tokens are recorded by their claims only.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["AutoApproveRule", "Base", "IssuedToken", "Revocation", "TokenRequest"]


class Base(DeclarativeBase):
    pass


class IssuedToken(Base):
    """One row per minted ID token: its claims and who minted it, never the token."""

    __tablename__ = "issued_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    sub: Mapped[str] = mapped_column(Text, index=True)
    kid: Mapped[str] = mapped_column(String(255), index=True)
    scope: Mapped[str | None] = mapped_column(Text)
    iat: Mapped[int] = mapped_column(BigInteger)
    exp: Mapped[int | None] = mapped_column(BigInteger)
    minted_by: Mapped[str] = mapped_column(Text)
    minted_via: Mapped[str] = mapped_column(String(32))


class Revocation(Base):
    """A revocation rule: ``kind`` is ``jti``, ``identity`` (tokens of ``value`` issued at or
    before ``created_at``) or ``expr`` (a ClassAd expression over the claims)."""

    __tablename__ = "revocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)


class TokenRequest(Base):
    """A token request (HTCondor's request/approve flow), kept across restarts.

    ``client_secret_hash`` is SHA-256 of the secret the requester polls with; the token is
    minted when the requester collects it after approval, so it is never stored.
    """

    __tablename__ = "token_requests"

    id: Mapped[str] = mapped_column(String(7), primary_key=True)
    client_secret_hash: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(Text)
    requester: Mapped[str] = mapped_column(Text)
    peer: Mapped[str] = mapped_column(Text)
    identity: Mapped[str] = mapped_column(Text)
    authz: Mapped[str] = mapped_column(Text)
    lifetime: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    decided_by: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[int | None] = mapped_column(BigInteger)
    token_jti: Mapped[str | None] = mapped_column(String(64))


class AutoApproveRule(Base):
    """``condor_token_request_auto_approve``: approve matching requests from a netblock."""

    __tablename__ = "auto_approve_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    netblock: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(Text)
