"""phone-number ownership: one holder (account and agent) per E.164 number

Existing agents' numbers are carried over; where several live agents listed one number,
the newest keeps it (as inbound routing chose before) and the others lose it.

Revision ID: 0012_security_numbers
Revises: 0007_merge
Create Date: 2026-12-03
"""

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0012_security_numbers"
down_revision = "0011_recordings"
branch_labels = None
depends_on = None


def upgrade() -> None:
    phone_numbers = op.create_table(
        "phone_numbers",
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=40), sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("agent_id", sa.String(length=40), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("number"),
    )
    op.create_index("ix_phone_numbers_account_id", "phone_numbers", ["account_id"])
    op.create_index("ix_phone_numbers_agent_id", "phone_numbers", ["agent_id"])

    connection = op.get_bind()
    agents = sa.table(
        "agents",
        sa.column("id"),
        sa.column("account_id"),
        sa.column("phone_numbers", sa.JSON),
        sa.column("status"),
        sa.column("created_at"),
    )
    rows = connection.execute(
        sa.select(agents.c.id, agents.c.account_id, agents.c.phone_numbers)
        .where(agents.c.status != "deleted")
        .order_by(agents.c.created_at.desc())
    ).all()
    held: set[str] = set()
    now = datetime.now(UTC)
    for agent_id, account_id, numbers in rows:
        numbers = json.loads(numbers) if isinstance(numbers, str) else numbers or []
        kept = [number for number in dict.fromkeys(numbers) if number not in held]
        held.update(kept)
        if kept:
            connection.execute(
                phone_numbers.insert(),
                [
                    {
                        "number": number,
                        "account_id": account_id,
                        "agent_id": agent_id,
                        "created_at": now,
                    }
                    for number in kept
                ],
            )
        if kept != numbers:
            connection.execute(
                agents.update().where(agents.c.id == agent_id).values(phone_numbers=kept)
            )


def downgrade() -> None:
    op.drop_index("ix_phone_numbers_agent_id", table_name="phone_numbers")
    op.drop_index("ix_phone_numbers_account_id", table_name="phone_numbers")
    op.drop_table("phone_numbers")
