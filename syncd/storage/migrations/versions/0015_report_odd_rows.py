"""``ix_orders_odd_sent``, ``ix_orders_odd_finished``: ``syncd report`` on SQLite finds the
orders whose times are not in syncd's form without judging every row.

SQLite keeps whatever a consumer writes in a time column; the report counts in the
database only the orders whose times it can compare and cut into days, and reads the
others whole. It judged each row of its window for that (SQLite's date functions, three
times a row: more than half of a month's report at a million orders). Two partial indexes
now hold the rows whose times are not plain, nearly always none: those whose time sent
(or created, if never sent) is odd, and those whose finish time is; the report reads
them through these and counts the rest without the check. Two, not one: the status
sweep sets ``finished_at`` in every row it writes, and SQLite then judges the condition
of every index on that column, which for the second is one NULL test. SQLite only:
PostgreSQL's and MariaDB's columns are typed and hold no such row.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.storage.backends import backend_for

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
_ODD = {
    "ix_orders_odd_sent": (
        f"NOT (({_TIME.format(column='submitted_at')}) OR (submitted_at IS NULL AND"
        f" (created_at IS NULL OR {_TIME.format(column='created_at')})))"
    ),
    "ix_orders_odd_finished": (
        f"finished_at IS NOT NULL AND NOT {_TIME.format(column='finished_at')}"
    ),
}


def _keeps_odd_times() -> bool:
    """Whether the database may hold times in forms syncd never writes (SQLite's untyped
    columns): only there are the indexes made."""
    return bool(backend_for(op.get_bind()).odd_times_sql)


def upgrade() -> None:
    if _keeps_odd_times():
        for name, where in _ODD.items():
            op.create_index(name, "orders", ["provider", "id"], sqlite_where=sa.text(where))


def downgrade() -> None:
    if _keeps_odd_times():
        for name in _ODD:
            op.drop_index(name, table_name="orders")
