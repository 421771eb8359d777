"""recordings in a shared store: each session's recording state, and per-account storage caps

Revision ID: 0011_recordings
Revises: 0007_merge
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_recordings"
down_revision = "0010_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("recording_quota_bytes", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("recording_status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("recording_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("recording_stored_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("recording_reason", sa.String(length=200), nullable=True))
        batch.create_index(
            "ix_sessions_recording_expiry", ["recording_status", "recording_stored_at"]
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_recording_expiry")
        for column in (
            "recording_reason",
            "recording_stored_at",
            "recording_bytes",
            "recording_status",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("recording_quota_bytes")
