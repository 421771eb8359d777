"""telephony: agent phone numbers, agent instances, phone calls, used relay tokens

Revision ID: 0002_telephony
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_telephony"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("phone_numbers", sa.JSON(), nullable=False, server_default="[]"))
    op.create_table(
        "agent_instances",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("agent_id", sa.String(length=40), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_agent_instances_account_id", "agent_instances", ["account_id"])
    op.create_index("ix_agent_instances_agent_id", "agent_instances", ["agent_id"])
    op.create_table(
        "phone_calls",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("agent_id", sa.String(length=40), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("session_id", sa.String(length=40), sa.ForeignKey("sessions.id"), nullable=False),
        sa.Column("instance_id", sa.String(length=40), nullable=True),
        sa.Column("carrier", sa.String(length=16), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("from_number", sa.String(length=64), nullable=False),
        sa.Column("to_number", sa.String(length=64), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_phone_calls_account_id", "phone_calls", ["account_id"])
    op.create_index("ix_phone_calls_agent_id", "phone_calls", ["agent_id"])
    op.create_index("ix_phone_calls_session_id", "phone_calls", ["session_id"])
    op.create_index("ix_phone_calls_call_sid", "phone_calls", ["call_sid"])
    op.create_table(
        "used_relay_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=40), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti"),
    )


def downgrade() -> None:
    op.drop_table("used_relay_tokens")
    op.drop_table("phone_calls")
    op.drop_table("agent_instances")
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("phone_numbers")
