"""Provider columns for a paused sender, a provider that only answers 429, and the mark
of the latest time syncd's clock wrote into a provider's orders or requests.

``send_paused_at`` is set when a call that changes something at the provider (``add``,
``refill``, ``cancel``) ended with its outcome unknown: nothing more is sent to that
provider until ``send_resume_at``, when a harmless call (``balance``) must succeed and
one order or request goes alone; a clear answer to it lifts the pause.
``send_pauses`` counts the unknown outcomes in a row (each one doubles the wait) and
``send_pause_reason`` says which call and why. ``throttled_since`` is the start of an
unbroken run of 429 answers; ``throttled`` is the alert state (``provider.throttled``
raised), kept so that a restart never raises it again. ``clock_mark`` is the latest time
syncd's clock wrote into the provider's orders or requests (a one-off command included):
when it lies in the future, a clock ran ahead, and the next orders pass brings the check
times that clock wrote back to now.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.storage.types import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("providers", sa.Column("send_paused_at", UTCDateTime(), nullable=True))
    op.add_column("providers", sa.Column("send_resume_at", UTCDateTime(), nullable=True))
    op.add_column(
        "providers",
        sa.Column("send_pauses", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column("providers", sa.Column("send_pause_reason", sa.String(), nullable=True))
    op.add_column("providers", sa.Column("throttled_since", UTCDateTime(), nullable=True))
    op.add_column(
        "providers",
        sa.Column("throttled", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("providers", sa.Column("clock_mark", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("providers") as table:
        for column in (
            "clock_mark",
            "throttled",
            "throttled_since",
            "send_pause_reason",
            "send_pauses",
            "send_resume_at",
            "send_paused_at",
        ):
            table.drop_column(column)
