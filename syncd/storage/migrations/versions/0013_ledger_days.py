"""``ledger_days``: the ledger summed by day, and the order indexes of ``syncd report``.

``syncd report`` read every ledger row and every order of its window (a month of a busy
provider is hundreds of thousands of each). It now reads ``ledger_days`` (a row per
provider, UTC day and stretch of rows that continue each other; kept in the transaction
that writes the rows: ``syncd.storage.ledger_days``), filled here from the rows already
written, and finds the orders of its window by range: those sent (or, never sent,
created) in it by ``ix_orders_provider_sent`` (provider, submitted_at, created_at), those
finished in it by ``ix_orders_provider_finished`` (provider, finished_at).

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.storage.driver import Driver
from syncd.storage.ledger_days import catch_up
from syncd.storage.types import Money, UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_days",
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("first_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("first_at", UTCDateTime(), nullable=False),
        sa.Column("currency", sa.String(), nullable=True),
        sa.Column("opening", Money(), nullable=False),
        sa.Column("closing", Money(), nullable=False),
        sa.Column("charges", Money(), nullable=True),
        sa.Column("refunds", Money(), nullable=True),
        sa.Column("topups", Money(), nullable=True),
        sa.Column("drift", Money(), nullable=True),
        sa.Column("row_count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "first_id"),
    )
    op.create_index("ix_ledger_days_provider_at", "ledger_days", ["provider", "first_at"])
    op.create_index("ix_orders_provider_sent", "orders", ["provider", "submitted_at", "created_at"])
    op.create_index("ix_orders_provider_finished", "orders", ["provider", "finished_at"])
    bind = op.get_bind()
    d = Driver(bind)
    for (provider,) in d.run("SELECT DISTINCT provider FROM ledger"):
        catch_up(d, provider)


def downgrade() -> None:
    op.drop_index("ix_orders_provider_finished", table_name="orders")
    op.drop_index("ix_orders_provider_sent", table_name="orders")
    op.drop_index("ix_ledger_days_provider_at", table_name="ledger_days")
    op.drop_table("ledger_days")
