"""``providers.catalog_digest``: a digest of the last catalog reply applied, so that a
reply byte for byte the same is recognised without being read again (a 10,000-package
catalog costs a tenth of a second to parse and compare, at every pass).

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("providers", sa.Column("catalog_digest", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("providers") as table:
        table.drop_column("catalog_digest")
