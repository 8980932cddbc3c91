"""Orders of every type: the fields a type needs, and the status fields beyond the
common ones.

``orders.params`` is a JSON object a consumer writes with the provider's own field names
(``runs``, ``interval``, ``usernames``, ``min``/``max`` of a subscription...); syncd checks
it against the package's type before anything is sent. ``orders.status_extra`` keeps
what a status reply says beyond status, charge, start count and remains (a drip-feed's
``runs`` and child ``orders``, a subscription's ``posts`` and ``expiry``), and a change
of it is an ``order_changes`` row with ``extra_old`` / ``extra_new``.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("params", sa.JSON(), nullable=True))
    op.add_column("orders", sa.Column("status_extra", sa.JSON(), nullable=True))
    op.add_column("order_changes", sa.Column("extra_old", sa.JSON(), nullable=True))
    op.add_column("order_changes", sa.Column("extra_new", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("order_changes") as table:
        table.drop_column("extra_new")
        table.drop_column("extra_old")
    with op.batch_alter_table("orders") as table:
        table.drop_column("status_extra")
        table.drop_column("params")
