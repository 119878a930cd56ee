"""Credential store: users, credentials, pending authorizations, append-only audit log.

Revision ID: 0002_creds
Revises: 0001_tokens
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_creds"
down_revision = "0001_tokens"
branch_labels = None
depends_on = None

_PG_APPEND_ONLY = """
CREATE FUNCTION htsec_audit_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION htsec_audit_append_only();
"""


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user", sa.String(255), sa.ForeignKey("users.name"), nullable=False),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("handle", sa.String(255), nullable=False, server_default=""),
        sa.Column("provider", sa.String(255), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False, server_default=""),
        sa.Column("audience", sa.Text, nullable=False, server_default=""),
        sa.Column("refresh_token", sa.LargeBinary),
        sa.Column("access_token", sa.LargeBinary),
        sa.Column("token_type", sa.String(64), nullable=False, server_default="bearer"),
        sa.Column("access_expires_at", sa.BigInteger),
        sa.Column("client_id", sa.Text),
        sa.Column("client_secret", sa.LargeBinary),
        sa.Column("token_url", sa.Text),
        sa.Column("state", sa.String(32), nullable=False, server_default="active"),
        sa.Column("last_error", sa.Text),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("user", "service", "handle", name="uq_credentials_name"),
    )
    op.create_index("ix_credentials_state", "credentials", ["state"])
    op.create_table(
        "pending_authorizations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("handle", sa.String(255), nullable=False, server_default=""),
        sa.Column("provider", sa.String(255), nullable=False),
        sa.Column("scopes", sa.Text, nullable=False, server_default=""),
        sa.Column("audience", sa.Text, nullable=False, server_default=""),
        sa.Column("return_url", sa.Text),
        sa.Column("state", sa.String(32), nullable=False, server_default="pending"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("user", sa.String(255)),
        sa.Column("service", sa.String(255)),
        sa.Column("handle", sa.String(255)),
        sa.Column("peer", sa.Text),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_audit_log_user", "audit_log", ["user"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(_PG_APPEND_ONLY)
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_no_update ON audit_log")
        op.execute("DROP FUNCTION htsec_audit_append_only()")
    op.drop_table("audit_log")
    op.drop_table("pending_authorizations")
    op.drop_index("ix_credentials_state", "credentials")
    op.drop_table("credentials")
    op.drop_table("users")
