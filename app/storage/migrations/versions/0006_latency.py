"""per-session latency record

Revision ID: 0006_latency
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_latency"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "session_latency",
        sa.Column(
            "session_id", sa.String(length=40), sa.ForeignKey("sessions.id"), primary_key=True
        ),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("session_latency")
