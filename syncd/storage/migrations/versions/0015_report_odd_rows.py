"""``ix_orders_odd_times``: ``syncd report`` on SQLite finds the orders whose times are not
in syncd's form without judging every row.

SQLite keeps whatever a consumer writes in a time column; the report counts in the
database only the orders whose times it can compare and cut into days, and reads the
others whole. It judged each row of its window for that (SQLite's date functions, three
times a row: more than half of a month's report at a million orders). A partial index now
holds the rows whose times are not plain, nearly always none; the report reads them
through it and counts the rest without the check. SQLite only: PostgreSQL's and MariaDB's
columns are typed and hold no such row.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As the code wrote it when this revision was made (SQLite.odd_times_sql): a database
# migrated before looks the same whatever the code says today. The report repeats it
# literally (SQLite uses a partial index only for a WHERE that does): a change to it
# needs a new revision that rebuilds the index.
_TIME = (
    "(typeof({column}) = 'text' AND length({column}) = 26"
    " AND substr({column}, 20) GLOB '.[0-9][0-9][0-9][0-9][0-9][0-9]'"
    " AND substr({column}, 1, 4) <> '0000'"
    " AND datetime(julianday(substr({column}, 1, 19))) IS substr({column}, 1, 19))"
)
_WHERE = (
    f"NOT ((({_TIME.format(column='submitted_at')}) OR (submitted_at IS NULL AND"
    f" (created_at IS NULL OR {_TIME.format(column='created_at')})))"
    f" AND (finished_at IS NULL OR {_TIME.format(column='finished_at')}))"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index(
            "ix_orders_odd_times", "orders", ["provider", "id"], sqlite_where=sa.text(_WHERE)
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_orders_odd_times", table_name="orders")
