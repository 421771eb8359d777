"""agents.overflow_number: where an inbound call goes when the agent cannot take it

Revision ID: 0015_agent_overflow_number
Revises: 0014_agent_endpointing
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_agent_overflow_number"
down_revision = "0014_agent_endpointing"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("overflow_number", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("overflow_number")
