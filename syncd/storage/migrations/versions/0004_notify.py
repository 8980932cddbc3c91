"""PostgreSQL notifications: ``syncd_orders`` when an order becomes ``queued`` (a
consumer's plain INSERT included), so a running ``syncd run`` sends it at once; and
``syncd_changes`` when rows are added to a change feed, so ``syncd changes --follow``
prints them at once. SQLite has no notifications: both are polled there.

A notification's payload is at most 8000 bytes and an oversized one would fail the
consumer's INSERT: the provider name in ``syncd_orders`` is cut to 100 characters, and
the feed's payload is only its table name.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

from syncd.storage.backends import backend_for

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FEEDS = ("order_changes", "package_changes", "alerts")
# What this revision creates is fixed, the state's name included: a migration never
# follows a later rename (a new revision would).
QUEUED = "queued"


def upgrade() -> None:
    backend_for(op.get_bind()).install_notify(
        op.execute, functions=True, queued_state=QUEUED, feeds=FEEDS
    )


def downgrade() -> None:
    backend_for(op.get_bind()).remove_notify(
        op.execute, functions=True, queued_state=QUEUED, feeds=FEEDS
    )
