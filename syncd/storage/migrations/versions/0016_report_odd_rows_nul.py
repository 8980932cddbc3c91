"""``ix_orders_odd_sent``, ``ix_orders_odd_finished`` rebuilt: a time with a NUL inside is
odd too.

SQLite's ``length()`` of a text stops at its first NUL, so a time a consumer wrote as
``'2026-11-14 10:00:00.000000'`` followed by a NUL and anything passed the form check of
revision 0015 by its first 26 characters, and the report's counts in the database left
such an order out where reading the orders one by one counts it (at the time before the
NUL, as syncd reads it). The check now counts
the text's bytes (``length(CAST(... AS BLOB))``); the indexes holding the odd rows are
made again with it, since the report names them and repeats their condition. SQLite only,
as 0015.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.storage.backends import backend_for

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _odd(time: str) -> dict[str, str]:
    """The two indexes' conditions from the check of one time column (as in 0015)."""
    return {
        "ix_orders_odd_sent": (
            f"NOT (({time.format(column='submitted_at')}) OR (submitted_at IS NULL AND"
            f" (created_at IS NULL OR {time.format(column='created_at')})))"
        ),
        "ix_orders_odd_finished": (
            f"finished_at IS NOT NULL AND NOT {time.format(column='finished_at')}"
        ),
    }


# As the code wrote the check when this revision was made (SQLite.well_formed_time_sql),
# and as 0015 did, for the way down.
_TIME = (
    "(typeof({column}) = 'text' AND length(CAST({column} AS BLOB)) = 26"
    " AND substr({column}, 20) GLOB '.[0-9][0-9][0-9][0-9][0-9][0-9]'"
    " AND substr({column}, 1, 4) <> '0000'"
    " AND datetime(julianday(substr({column}, 1, 19))) IS substr({column}, 1, 19))"
)
_TIME_0015 = _TIME.replace("length(CAST({column} AS BLOB))", "length({column})")


def _keeps_odd_times() -> bool:
    return bool(backend_for(op.get_bind()).odd_times_sql)


def _rebuild(time: str) -> None:
    if _keeps_odd_times():
        for name, where in _odd(time).items():
            op.drop_index(name, table_name="orders")
            op.create_index(name, "orders", ["provider", "id"], sqlite_where=sa.text(where))


def upgrade() -> None:
    _rebuild(_TIME)


def downgrade() -> None:
    _rebuild(_TIME_0015)
