"""calls: call controls on agents, inline calls (session without a stored agent)

Revision ID: 0003_calls
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_calls"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(
            sa.Column("first_speaker", sa.String(length=8), nullable=False, server_default="agent")
        )
        batch.add_column(
            sa.Column("interruptible", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(
            sa.Column("max_duration", sa.Integer(), nullable=False, server_default="3000")
        )
        batch.add_column(sa.Column("inactivity_timeout", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column(
                "inactivity_action", sa.String(length=16), nullable=False, server_default="end_call"
            )
        )
        batch.add_column(
            sa.Column("recording_enabled", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("sessions") as batch:
        batch.alter_column("agent_id", existing_type=sa.String(length=40), nullable=True)
        batch.add_column(sa.Column("inline_config", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("resume_deadline", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("resume_deadline")
        batch.drop_column("inline_config")
        batch.alter_column("agent_id", existing_type=sa.String(length=40), nullable=False)
    with op.batch_alter_table("agents") as batch:
        for column in (
            "recording_enabled",
            "inactivity_action",
            "inactivity_timeout",
            "max_duration",
            "interruptible",
            "first_speaker",
        ):
            batch.drop_column(column)
