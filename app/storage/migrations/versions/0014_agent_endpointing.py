"""agents.endpointing: how soon a pause ends the caller's turn

Revision ID: 0014_agent_endpointing
Revises: 0013_security_sessions
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_agent_endpointing"
down_revision = "0013_security_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("endpointing", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("endpointing")
