"""Where a credential came from: the credmon forgets what HTCondor removed from its directory.

Revision ID: 0004_source
Revises: 0003_credmon
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_source"
down_revision = "0003_credmon"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: stored through htsec (API or CLI); "cred-dir": imported from HTCondor's directory.
    op.add_column("credentials", sa.Column("source", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("credentials") as batch:
        batch.drop_column("source")
