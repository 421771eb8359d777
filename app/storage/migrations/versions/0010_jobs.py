"""durable jobs for post-call work (webhook deliveries, analyses, recordings)

Analyses left `pending` by the in-memory tasks of older versions will never finish:
they are marked failed, so they can be run again.

Revision ID: 0010_jobs
Revises: 0007_merge
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_jobs"
down_revision = "0009_nodes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_by", sa.String(length=40), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_jobs_status_run_at", "jobs", ["status", "run_at"])
    op.execute(
        "UPDATE session_analyses SET status = 'failed', error = 'interrupted by a server upgrade' "
        "WHERE status = 'pending'"
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_status_run_at", table_name="jobs")
    op.drop_table("jobs")
