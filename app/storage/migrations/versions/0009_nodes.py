"""node leases: each server process registers itself and renews its lease

Revision ID: 0009_nodes
Revises: 0007_merge
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_nodes"
down_revision = "0007_merge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=200), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("live_calls", sa.Integer(), nullable=False),
        sa.Column("load", sa.Float(), nullable=False),
    )
    op.create_index("ix_nodes_heartbeat_at", "nodes", ["heartbeat_at"])


def downgrade() -> None:
    op.drop_index("ix_nodes_heartbeat_at", "nodes")
    op.drop_table("nodes")
