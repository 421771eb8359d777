"""agents.overflow, max_wait_secs, wait_message and call_waits: inbound calls waiting for a
place under their account's call cap

Revision ID: 0018_call_queue
Revises: 0017_campaigns
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_call_queue"
down_revision = "0017_campaigns"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(
            sa.Column("overflow", sa.String(length=8), nullable=False, server_default="busy")
        )
        batch.add_column(
            sa.Column("max_wait_secs", sa.Integer(), nullable=False, server_default="60")
        )
        batch.add_column(sa.Column("wait_message", sa.Text(), nullable=True))
    op.create_table(
        "call_waits",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("call_sid", sa.String(64), nullable=False),
        sa.Column("from_number", sa.String(64), nullable=False),
        sa.Column("to_number", sa.String(64), nullable=False),
        sa.Column("queue_sid", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("offered_until", sa.DateTime(timezone=True)),
        sa.Column("session_id", sa.String(40), sa.ForeignKey("sessions.id")),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_call_waits_line", "call_waits", ["account_id", "status", "seq"])
    op.create_index("ix_call_waits_agent_id", "call_waits", ["agent_id"])
    op.create_index("ix_call_waits_call_sid", "call_waits", ["call_sid"])


def downgrade() -> None:
    op.drop_table("call_waits")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("wait_message")
        batch.drop_column("max_wait_secs")
        batch.drop_column("overflow")
