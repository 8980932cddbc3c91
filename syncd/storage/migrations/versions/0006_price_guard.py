"""``orders.max_rate`` and ``orders.quoted_rate``: the price guard.

``max_rate`` is the most the consumer will pay per 1000 (it writes it with the order);
``quoted_rate`` is the package's rate when syncd first judged the order (a consumer may
write its own). An order whose package costs more is held ``queued`` instead of sent.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.storage.types import Money

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("orders", sa.Column("max_rate", Money(), nullable=True))
    op.add_column("orders", sa.Column("quoted_rate", Money(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as table:
        table.drop_column("quoted_rate")
        table.drop_column("max_rate")
