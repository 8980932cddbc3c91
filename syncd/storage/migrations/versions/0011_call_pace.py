"""``call_pace``: a provider's limits and 429 pause, shared by every process calling it.

One row per provider and action (``*``: every call together, which also keeps the pause
a 429 asked for), holding the earliest moment the next call may leave on the database's
clock. Reserving a turn locks the row, so the daemon's instances and one-shot commands
take their turns from one line, and a restart remembers a pause.

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.storage.types import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_pace",
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("next_at", UTCDateTime(), nullable=True),
        sa.Column("paused_until", UTCDateTime(), nullable=True),
        sa.Column("careful_until", UTCDateTime(), nullable=True),
        sa.Column("guess", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "action"),
    )


def downgrade() -> None:
    op.drop_table("call_pace")
