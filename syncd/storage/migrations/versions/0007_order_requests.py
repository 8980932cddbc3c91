"""``order_requests`` and ``request_changes``: refills and cancellations of orders.

A consumer asks by inserting ``(order_id, kind, state = 'queued')``; syncd sends each
request exactly once, tracks a refill's status, and writes every change of a request's
``state`` or ``status`` to ``request_changes``, a feed read like ``order_changes``. On
PostgreSQL a new ``request_changes`` row notifies ``syncd_changes``, as the other feeds
do.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.storage.backends import backend_for
from syncd.storage.types import UTCDateTime

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "order_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("state", sa.String(), server_default="queued", nullable=False),
        sa.Column("provider_request_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("status_raw", sa.String(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column(
            "created_at",
            UTCDateTime(),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("checked_at", UTCDateTime(), nullable=True),
        sa.Column("next_check_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("submit_owner", sa.String(), nullable=True),
        sa.Column("submit_deadline", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_order_requests_state", "order_requests", ["state", "next_check_at"])
    op.create_index("ix_order_requests_order_id", "order_requests", ["order_id"])
    op.create_table(
        "request_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.Column("state_old", sa.String(), nullable=True),
        sa.Column("state_new", sa.String(), nullable=True),
        sa.Column("status_old", sa.String(), nullable=True),
        sa.Column("status_new", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_request_changes_request_id", "request_changes", ["request_id"])
    backend_for(op.get_bind()).install_notify(
        op.execute, functions=False, queued_state=None, feeds=("request_changes",)
    )


def downgrade() -> None:
    backend_for(op.get_bind()).remove_notify(
        op.execute, functions=False, queued_state=None, feeds=("request_changes",)
    )
    op.drop_table("request_changes")
    op.drop_table("order_requests")
