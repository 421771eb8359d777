"""merge the parallel branches into one head

The telephony, calls, analysis, account-limit and latency migrations were written in
parallel off 0001; they touch different tables. New migrations follow this one.

Revision ID: 0007_merge
Revises: 0002_telephony, 0003_calls, 0004_analysis_cost_webhooks, 0005_account_limits, 0006_latency
Create Date: 2026-11-22
"""

revision = "0007_merge"
down_revision = (
    "0002_telephony",
    "0003_calls",
    "0004_analysis_cost_webhooks",
    "0005_account_limits",
    "0006_latency",
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
