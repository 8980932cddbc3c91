"""``ix_orders_held``: ``syncd status`` counts the orders the price guard holds without
reading the error of every queued order.

Queued orders whose error begins with ``held: `` were found through ``ix_orders_due``
(provider, state), and each one's row read to look at its error: on MariaDB, which reads
those rows one at a time from all over the table, a second at a million orders. Where
partial indexes exist (SQLite, PostgreSQL) the index holds the held orders alone; MariaDB
indexes every order by the first six characters of its error, and finds the held ones by
range (``Backend.starts_with_sql``).

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As the code wrote them when this revision was made (lifecycle.HELD, tables.HELD_ORDERS):
# a database migrated before looks the same whatever the code says today.
_HELD = "held: "
_WHERE = f"state = 'queued' AND substr(error, 1, {len(_HELD)}) = '{_HELD}'"


def upgrade() -> None:
    op.create_index(
        "ix_orders_held",
        "orders",
        ["provider", "state", "error"],
        sqlite_where=sa.text(_WHERE),
        postgresql_where=sa.text(_WHERE),
        mysql_length={"error": len(_HELD)},
    )


def downgrade() -> None:
    op.drop_index("ix_orders_held", table_name="orders")
