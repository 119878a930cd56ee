"""credmon: which refreshes were sent and not yet answered (crash recovery).

``refresh_sent_at`` is set, durably, before a refresh request carrying the stored refresh token
is sent, and cleared when the provider's answer is recorded. A row that still has it after the
credmon's worker died was in flight: the provider may have rotated its refresh token in an
answer that was lost with the process.

Revision ID: 0005_refresh_sent
Revises: 0004_source
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_refresh_sent"
down_revision = "0004_source"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("credentials", sa.Column("refresh_sent_at", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("refresh_sent_at")
