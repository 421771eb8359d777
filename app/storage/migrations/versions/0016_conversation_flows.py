"""agents.flow (a conversation flow, Pipecat's flow config) and sessions.flow_state (the
path of nodes a call took and the values it collected)

Revision ID: 0016_conversation_flows
Revises: 0015_agent_overflow_number
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_conversation_flows"
down_revision = "0015_agent_overflow_number"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("flow", sa.JSON(), nullable=True))
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("flow_state", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("flow_state")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("flow")
