"""IDTOKENS authority: issued tokens, revocations, token requests, auto-approval rules.

Revision ID: 0001_tokens
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_tokens"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "issued_tokens",
        sa.Column("jti", sa.String(64), primary_key=True),
        sa.Column("sub", sa.Text, nullable=False),
        sa.Column("kid", sa.String(255), nullable=False),
        sa.Column("scope", sa.Text),
        sa.Column("iat", sa.BigInteger, nullable=False),
        sa.Column("exp", sa.BigInteger),
        sa.Column("minted_by", sa.Text, nullable=False),
        sa.Column("minted_via", sa.String(32), nullable=False),
    )
    op.create_index("ix_issued_tokens_sub", "issued_tokens", ["sub"])
    op.create_index("ix_issued_tokens_kid", "issued_tokens", ["kid"])
    op.create_table(
        "revocations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
    )
    op.create_table(
        "token_requests",
        sa.Column("id", sa.String(7), primary_key=True),
        sa.Column("client_secret_hash", sa.String(64), nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("requester", sa.Text, nullable=False),
        sa.Column("peer", sa.Text, nullable=False),
        sa.Column("identity", sa.Text, nullable=False),
        sa.Column("authz", sa.Text, nullable=False),
        sa.Column("lifetime", sa.BigInteger),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("decided_by", sa.Text),
        sa.Column("decided_at", sa.BigInteger),
        sa.Column("token_jti", sa.String(64)),
    )
    op.create_index("ix_token_requests_state", "token_requests", ["state"])
    op.create_table(
        "auto_approve_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("netblock", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("auto_approve_rules")
    op.drop_index("ix_token_requests_state", "token_requests")
    op.drop_table("token_requests")
    op.drop_table("revocations")
    op.drop_index("ix_issued_tokens_kid", "issued_tokens")
    op.drop_index("ix_issued_tokens_sub", "issued_tokens")
    op.drop_table("issued_tokens")
