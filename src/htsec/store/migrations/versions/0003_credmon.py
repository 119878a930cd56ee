"""credmon: refresh leases, failure bookkeeping and the access token's lifetime.

Revision ID: 0003_credmon
Revises: 0002_creds
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_credmon"
down_revision = "0002_creds"
branch_labels = None
depends_on = None

_COLUMNS = (
    sa.Column("lease_owner", sa.Text),
    sa.Column("lease_token", sa.String(32)),
    sa.Column("lease_until", sa.BigInteger),
    sa.Column("access_issued_at", sa.BigInteger),
    sa.Column("refreshed_at", sa.BigInteger),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.BigInteger),
)


def upgrade() -> None:
    for column in _COLUMNS:
        op.add_column("credentials", column)
    op.create_index("ix_credentials_due", "credentials", ["state", "access_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_credentials_due", "credentials")
    with op.batch_alter_table("credentials") as batch:
        for column in reversed(_COLUMNS):
            batch.drop_column(column.name)
