"""When a call to the provider last succeeded (``providers.answered_at``).

A job's success is no proof that the provider answered: an orders pass with nothing due
calls nobody. The health tracker writes this column with a success at most once a minute
(it skips the database on a run of successes), so it is exact to within a minute, and
``syncd_provider_last_answer_timestamp_seconds`` exports it.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.storage.types import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("providers", sa.Column("answered_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("providers") as table:
        table.drop_column("answered_at")
