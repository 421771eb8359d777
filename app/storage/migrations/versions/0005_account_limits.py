"""account call caps and the host that runs each session

Revision ID: 0005_account_limits
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_account_limits"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("max_concurrent_calls", sa.Integer(), nullable=True))
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("host", sa.String(length=200), nullable=True))
        batch.create_index("ix_sessions_host", ["host"])


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_index("ix_sessions_host")
        batch.drop_column("host")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("max_concurrent_calls")
