"""portal: one-time authorisation links, their needs, browser sessions and pending OAuth logins.

``pending_authorizations`` (created by 0002, unused until now) becomes the table of one-time
links: its ``id`` is the SHA-256 (hex) of the link's secret id, never the id itself; a link
names the user it is for, when it expires, the browser session it was first opened in and when
it was used up. What it asks for are rows of ``authorization_needs``.

``portal_sessions`` are browser sessions (the cookie holds a random id; the row is keyed by its
SHA-256) and ``portal_logins`` the authorization-code flows in progress (keyed by the SHA-256
of ``state``; the PKCE verifier sealed), so any portal process on the same database finishes a
flow another one started.

Revision ID: 0006_portal
Revises: 0005_refresh_sent
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_portal"
down_revision = "0005_refresh_sent"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pending_authorizations") as batch:
        # "htsec" (POST /v1/creds/authorizations) or "cred-dir" (condor_credd's <root>/<64 hex>)
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="htsec"))
        batch.add_column(sa.Column("session_hash", sa.String(64)))
        batch.add_column(sa.Column("bound_at", sa.BigInteger))
        batch.add_column(sa.Column("consumed_at", sa.BigInteger))
    op.create_index("ix_pending_authorizations_user", "pending_authorizations", ["user"])
    op.create_table(
        "authorization_needs",
        sa.Column(
            "link_hash",
            sa.String(64),
            sa.ForeignKey("pending_authorizations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("handle", sa.String(255), nullable=False, server_default=""),
        sa.Column("provider", sa.String(255), nullable=False),
        # space-separated, sorted: compared as sets
        sa.Column("scopes", sa.Text, nullable=False, server_default=""),
        sa.Column("audience", sa.Text),
        sa.Column("completed_at", sa.BigInteger),
    )
    op.create_table(
        "portal_sessions",
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("user", sa.String(255)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("seen_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_portal_sessions_expires_at", "portal_sessions", ["expires_at"])
    op.create_table(
        "portal_logins",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column("session_hash", sa.String(64), nullable=False, index=True),
        sa.Column("link_hash", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(255), nullable=False),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("code_verifier", sa.LargeBinary, nullable=False),
        sa.Column("nonce", sa.String(64)),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("used_at", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("portal_logins")
    op.drop_index("ix_portal_sessions_expires_at", "portal_sessions")
    op.drop_table("portal_sessions")
    op.drop_table("authorization_needs")
    op.drop_index("ix_pending_authorizations_user", "pending_authorizations")
    with op.batch_alter_table("pending_authorizations") as batch:
        batch.drop_column("consumed_at")
        batch.drop_column("bound_at")
        batch.drop_column("session_hash")
        batch.drop_column("source")
