"""execute: the local execution point's jobs (clusters and their procs).

A proc's state follows HTCondor's JobStatus names (idle, running, completed, held, removed);
its expanded job ad is kept as JSON, so a job survives an ``htsec serve`` restart.

Revision ID: 0007_jobs
Revises: 0006_portal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_jobs"
down_revision = "0006_portal"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_clusters",
        sa.Column("cluster_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("submitter", sa.Text, nullable=False),
        sa.Column("iwd", sa.Text, nullable=False),
        sa.Column("submit_text", sa.Text, nullable=False),
        sa.Column("procs", sa.Integer, nullable=False),
        sa.Column("submitted_at", sa.Float, nullable=False),
    )
    op.create_table(
        "job_procs",
        sa.Column(
            "cluster_id",
            sa.Integer,
            sa.ForeignKey("job_clusters.cluster_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("proc_id", sa.Integer, primary_key=True),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("hold_reason", sa.Text),
        sa.Column("hold_code", sa.Integer),
        sa.Column("exit_code", sa.Integer),
        sa.Column("exit_signal", sa.Integer),
        sa.Column("ad", sa.Text, nullable=False),
        sa.Column("sandbox", sa.Text),
        sa.Column("cgroup", sa.Text),
        sa.Column("pid", sa.Integer),
        sa.Column("pid_start", sa.BigInteger),
        sa.Column("runs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("restarts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("note", sa.Text),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
    )
    op.create_index("ix_job_procs_state", "job_procs", ["state"])
    op.create_index("ix_job_procs_owner", "job_procs", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_job_procs_owner", "job_procs")
    op.drop_index("ix_job_procs_state", "job_procs")
    op.drop_table("job_procs")
    op.drop_table("job_clusters")
