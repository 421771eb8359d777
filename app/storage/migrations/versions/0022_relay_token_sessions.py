"""used_relay_tokens.session_id indexed: a status callback asks whether a call's stream opened

Revision ID: 0022_relay_token_sessions
Revises: 0021_evals
Create Date: 2026-12-04
"""

from alembic import op

revision = "0022_relay_token_sessions"
down_revision = "0021_evals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_used_relay_tokens_session_id", "used_relay_tokens", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_used_relay_tokens_session_id", "used_relay_tokens")
