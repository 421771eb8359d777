"""agents.voicemail and sessions.voicemail: answering-machine detection per agent, and the
setting an outbound call follows

Revision ID: 0019_voicemail
Revises: 0018_call_queue
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0019_voicemail"
down_revision = "0018_call_queue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("voicemail", sa.JSON(), nullable=True))
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("voicemail", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("voicemail")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("voicemail")
