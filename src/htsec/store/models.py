"""Tables of the store. Schema changes are Alembic migrations in ``migrations/versions``.

No table ever holds a token or a key: issued tokens are recorded by their claims only.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AuditEntry",
    "AuthorizationNeed",
    "AutoApproveRule",
    "Base",
    "Credential",
    "IssuedToken",
    "JobCluster",
    "JobProc",
    "PendingAuthorization",
    "PortalLogin",
    "PortalSession",
    "Revocation",
    "TokenRequest",
    "User",
]


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


class User(Base):
    """A local user name (``@domain`` stripped), as HTCondor's credential directory keys it."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class Credential(Base):
    """One OAuth credential ``<service>[_<handle>]`` of a user.

    ``refresh_token``, ``access_token`` and ``client_secret`` are sealed (AES-GCM, see
    :mod:`htsec.creds.crypto`) with the row's identity as associated data. ``handle`` is ``""``
    when the credential has none. ``version`` is the optimistic-concurrency counter.
    """

    __tablename__ = "credentials"
    __table_args__ = (
        UniqueConstraint("user", "service", "handle", name="uq_credentials_name"),
        Index("ix_credentials_due", "state", "access_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String(255), ForeignKey("users.name"))
    service: Mapped[str] = mapped_column(String(255))
    handle: Mapped[str] = mapped_column(String(255), default="")
    provider: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[str] = mapped_column(Text, default="")
    audience: Mapped[str] = mapped_column(Text, default="")
    refresh_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    access_token: Mapped[bytes | None] = mapped_column(LargeBinary)
    token_type: Mapped[str] = mapped_column(String(64), default="bearer")
    access_expires_at: Mapped[int | None] = mapped_column(BigInteger)
    client_id: Mapped[str | None] = mapped_column(Text)
    client_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    token_url: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32), default="active", index=True)
    last_error: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger)
    # credmon (migration 0003): a refresh holds the row by lease; failures back off.
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[int | None] = mapped_column(BigInteger)
    access_issued_at: Mapped[int | None] = mapped_column(BigInteger)
    refreshed_at: Mapped[int | None] = mapped_column(BigInteger)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[int | None] = mapped_column(BigInteger)
    # NULL: stored through htsec; "cred-dir": imported from HTCondor's credential directory.
    source: Mapped[str | None] = mapped_column(String(16))
    # Set before a refresh request is sent, cleared when its answer is recorded (0005).
    refresh_sent_at: Mapped[int | None] = mapped_column(BigInteger)


class PendingAuthorization(Base):
    """A one-time authorisation link (:mod:`htsec.creds.links`; 0006): ``id`` is the SHA-256 of
    the link's secret id. ``source`` is ``htsec`` (``POST /v1/creds/authorizations``) or
    ``cred-dir`` (condor_credd's ``<root>/<64 hex>``); the columns ``service`` to ``return_url``
    of 0002 are unused (a link's needs are :class:`AuthorizationNeed` rows)."""

    __tablename__ = "pending_authorizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    service: Mapped[str] = mapped_column(String(255), default="")
    handle: Mapped[str] = mapped_column(String(255), default="")
    provider: Mapped[str] = mapped_column(String(255), default="")
    scopes: Mapped[str] = mapped_column(Text, default="")
    audience: Mapped[str] = mapped_column(Text, default="")
    return_url: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32), default="pending")
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16), default="htsec")
    session_hash: Mapped[str | None] = mapped_column(String(64))
    bound_at: Mapped[int | None] = mapped_column(BigInteger)
    consumed_at: Mapped[int | None] = mapped_column(BigInteger)


class AuthorizationNeed(Base):
    """One credential a link asks for; ``scopes`` space-separated and sorted."""

    __tablename__ = "authorization_needs"

    link_hash: Mapped[str] = mapped_column(
        String(64), ForeignKey("pending_authorizations.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    service: Mapped[str] = mapped_column(String(255))
    handle: Mapped[str] = mapped_column(String(255), default="")
    provider: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[str] = mapped_column(Text, default="")
    audience: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[int | None] = mapped_column(BigInteger)


class PortalSession(Base):
    """A portal browser session; ``id_hash`` is the SHA-256 of the cookie's random id."""

    __tablename__ = "portal_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    csrf: Mapped[str] = mapped_column(String(64))
    user: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[int] = mapped_column(BigInteger)
    seen_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class PortalLogin(Base):
    """An authorization-code flow in progress: keyed by the SHA-256 of its ``state``, bound to
    the browser session that started it; ``code_verifier`` (PKCE) sealed."""

    __tablename__ = "portal_logins"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), index=True)
    link_hash: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(255))
    redirect_uri: Mapped[str] = mapped_column(Text)
    code_verifier: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    used_at: Mapped[int | None] = mapped_column(BigInteger)


class AuditEntry(Base):
    """Append-only (database triggers refuse UPDATE and DELETE); never holds a secret."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(32))
    user: Mapped[str | None] = mapped_column(String(255), index=True)
    service: Mapped[str | None] = mapped_column(String(255))
    handle: Mapped[str | None] = mapped_column(String(255))
    peer: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)


class JobCluster(Base):
    """A submit accepted by the local execution point (htsec.execute.records)."""

    __tablename__ = "job_clusters"

    cluster_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(200))
    submitter: Mapped[str] = mapped_column(Text)
    iwd: Mapped[str] = mapped_column(Text)
    submit_text: Mapped[str] = mapped_column(Text)
    procs: Mapped[int] = mapped_column(Integer)
    submitted_at: Mapped[float] = mapped_column(Float)


class JobProc(Base):
    """One proc of a cluster: state (idle, running, completed, held, removed), its expanded
    job ad as JSON, and what the runner needs to find it again after a restart."""

    __tablename__ = "job_procs"

    cluster_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("job_clusters.cluster_id", ondelete="CASCADE"), primary_key=True
    )
    proc_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    hold_reason: Mapped[str | None] = mapped_column(Text)
    hold_code: Mapped[int | None] = mapped_column(Integer)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    exit_signal: Mapped[int | None] = mapped_column(Integer)
    ad: Mapped[str] = mapped_column(Text)
    sandbox: Mapped[str | None] = mapped_column(Text)
    cgroup: Mapped[str | None] = mapped_column(Text)
    pid: Mapped[int | None] = mapped_column(Integer)
    pid_start: Mapped[int | None] = mapped_column(BigInteger)
    runs: Mapped[int] = mapped_column(Integer, server_default="0")
    restarts: Mapped[int] = mapped_column(Integer, server_default="0")
    note: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
