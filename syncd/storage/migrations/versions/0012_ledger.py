"""``ledger``: every move of a provider's balance, explained, and its state per provider.

A row for an order sent (at its expected cost), its charge when known, each refund or
surcharge after, and for what the balance polls show that orders do not explain: a
top-up or drift. ``providers`` keeps the current ledger's opening and what the last
poll left unexplained (syncd/ledger.py says how it is read). Existing installations
open their ledger at the first balance poll after the upgrade; orders sent before it
count only by the changes of their charge from then on.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from syncd.storage.backends import backend_for
from syncd.storage.types import Money, UTCDateTime

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATE: tuple[sa.Column[Any], ...] = (
    sa.Column("ledger_opened_at", UTCDateTime(), nullable=True),
    sa.Column("ledger_currency", sa.String(), nullable=True),
    sa.Column("ledger_opening", Money(), nullable=True),
    sa.Column("ledger_since_id", sa.BigInteger(), server_default="0", nullable=False),
    sa.Column("ledger_gap", Money(), nullable=True),
    sa.Column("ledger_polled_id", sa.BigInteger(), server_default="0", nullable=False),
    sa.Column("ledger_balanced_at", UTCDateTime(), nullable=True),
    sa.Column("ledger_drift", Money(), nullable=True),
    sa.Column("drifting", sa.Boolean(), server_default=sa.false(), nullable=False),
)


def upgrade() -> None:
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=True),
        sa.Column("amount", Money(), nullable=False),
        sa.Column("currency", sa.String(), nullable=True),
        sa.Column("balance_after", Money(), nullable=False),
        sa.ForeignKeyConstraint(["provider"], ["providers.name"]),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ledger_provider", "ledger", ["provider", "id"])
    op.create_index("ix_ledger_provider_at", "ledger", ["provider", "at"])
    op.create_index("ix_ledger_order_id", "ledger", ["order_id"])
    for column in _STATE:
        op.add_column("providers", column)
    # `syncd changes ledger --follow` wakes on new rows, like the other feeds.
    backend_for(op.get_bind()).install_notify(
        op.execute, functions=False, queued_state=None, feeds=("ledger",)
    )


def downgrade() -> None:
    backend_for(op.get_bind()).remove_notify(
        op.execute, functions=False, queued_state=None, feeds=("ledger",)
    )
    with op.batch_alter_table("providers") as table:
        for column in reversed(_STATE):
            table.drop_column(column.name)
    op.drop_index("ix_ledger_order_id", table_name="ledger")
    op.drop_index("ix_ledger_provider_at", table_name="ledger")
    op.drop_index("ix_ledger_provider", table_name="ledger")
    op.drop_table("ledger")
