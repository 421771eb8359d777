"""campaigns and campaign_contacts: batches of outbound calls

Revision ID: 0017_campaigns
Revises: 0016_conversation_flows
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_campaigns"
down_revision = "0016_conversation_flows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("agent_id", sa.String(40), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stop_reason", sa.String(40)),
        sa.Column("from_number", sa.String(32), nullable=False),
        sa.Column("calls_per_minute", sa.Float, nullable=False),
        sa.Column("max_concurrent", sa.Integer, nullable=False),
        sa.Column("window", sa.JSON),
        sa.Column("voicemail", sa.JSON),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("retry_after_minutes", sa.Float, nullable=False),
        sa.Column("tick_seq", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_campaigns_account_id", "campaigns", ["account_id"])
    op.create_index("ix_campaigns_agent_id", "campaigns", ["agent_id"])
    op.create_index("ix_campaigns_status", "campaigns", ["status"])
    op.create_index("ix_campaigns_created_at", "campaigns", ["created_at"])
    op.create_table(
        "campaign_contacts",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("campaign_id", sa.String(40), sa.ForeignKey("campaigns.id"), nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("variables", sa.JSON, nullable=False),
        sa.Column("instance_id", sa.String(40)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_outcome", sa.String(16)),
        sa.Column("last_error", sa.Text),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("call_id", sa.String(40)),
        sa.Column("session_ids", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_campaign_contacts_due",
        "campaign_contacts",
        ["campaign_id", "status", "next_attempt_at"],
    )
    op.create_index("ix_campaign_contacts_call_id", "campaign_contacts", ["call_id"])


def downgrade() -> None:
    op.drop_table("campaign_contacts")
    op.drop_table("campaigns")
