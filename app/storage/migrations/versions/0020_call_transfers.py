"""call_transfers: warm transfers' human legs, shared by every node

Revision ID: 0020_call_transfers
Revises: 0019_voicemail
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0020_call_transfers"
down_revision = "0019_voicemail"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_transfers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", sa.String(40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("session_id", sa.String(40), sa.ForeignKey("sessions.id"), nullable=False),
        sa.Column("to_number", sa.String(200), nullable=False),
        sa.Column("call_sid", sa.String(64)),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("pipeline", sa.String(200)),
        sa.Column("voice", sa.String(200), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_call_transfers_account_id", "call_transfers", ["account_id"])
    op.create_index("ix_call_transfers_session_id", "call_transfers", ["session_id"])


def downgrade() -> None:
    op.drop_table("call_transfers")
