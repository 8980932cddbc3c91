"""Bookkeeping for hostile input: clock-safe abandonment, delivery claims, package flags,
and partial indexes that find queued rows and rows in no known state without a scan.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.storage.types import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "orders", sa.Column("overdue_checks", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("alert_deliveries", sa.Column("claimed_by", sa.String(), nullable=True))
    op.add_column("alert_deliveries", sa.Column("claimed_until", UTCDateTime(), nullable=True))
    op.add_column("packages", sa.Column("refill", sa.Boolean(), nullable=True))
    op.add_column("packages", sa.Column("cancel", sa.Boolean(), nullable=True))
    for name, columns, where in (
        ("ix_orders_unsent", ["provider", "id"], "state IN ('queued', 'submitting')"),
        (
            "ix_orders_not_a_state",
            ["id"],
            "state NOT IN ('queued', 'submitting', 'active', 'done', 'rejected', "
            "'ambiguous', 'missing', 'abandoned')",
        ),
    ):
        op.create_index(
            name,
            "orders",
            columns,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )
    _flags_out_of_extra()


_YES = ("1", "true", "yes")
_NO = ("0", "false", "no")


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str):
        text = str(value).strip().lower()
        return True if text in _YES else False if text in _NO else None
    return None


def _flags_out_of_extra() -> None:
    """``refill`` and ``cancel`` were kept in ``extra``; move them to their columns, so that
    the next catalog sync sees no change (and records none)."""
    packages = sa.table(
        "packages",
        sa.column("provider", sa.String()),
        sa.column("service_id", sa.BigInteger()),
        sa.column("extra", sa.JSON()),
        sa.column("refill", sa.Boolean()),
        sa.column("cancel", sa.Boolean()),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(packages.c.provider, packages.c.service_id, packages.c.extra))
    for provider, service_id, extra in rows.all():
        if not isinstance(extra, dict) or not {"refill", "cancel"} & set(extra):
            continue
        conn.execute(
            sa.update(packages)
            .where(packages.c.provider == provider, packages.c.service_id == service_id)
            .values(
                refill=_flag(extra.get("refill")),
                cancel=_flag(extra.get("cancel")),
                extra={k: v for k, v in extra.items() if k not in ("refill", "cancel")},
            )
        )


def downgrade() -> None:
    op.drop_index("ix_orders_not_a_state", table_name="orders")
    op.drop_index("ix_orders_unsent", table_name="orders")
    with op.batch_alter_table("packages") as batch:
        batch.drop_column("cancel")
        batch.drop_column("refill")
    with op.batch_alter_table("alert_deliveries") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("overdue_checks")
