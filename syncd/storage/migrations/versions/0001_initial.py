"""Initial schema: every table of the public schema, plus syncd's own jobs table.

Revision ID: 0001
Revises: (none)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from syncd.storage.types import Money, UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "providers",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("currency", sa.String(), nullable=True),
        sa.Column("balance", Money(), nullable=True),
        sa.Column("balance_checked_at", UTCDateTime(), nullable=True),
        sa.Column("health", sa.String(), server_default="up", nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("catalog_synced_at", UTCDateTime(), nullable=True),
        sa.Column("orders_synced_at", UTCDateTime(), nullable=True),
        sa.Column("balance_low", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("auth_failed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("catalog_suspicious", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "alert_deliveries",
        sa.Column("alert_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("webhook", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("delivered_at", UTCDateTime(), nullable=True),
        sa.Column("failed_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
        ),
        sa.PrimaryKeyConstraint("alert_id", "webhook"),
    )
    op.create_index("ix_alert_deliveries_next_attempt_at", "alert_deliveries", ["next_attempt_at"])
    op.create_table(
        "balance_snapshots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("balance", Money(), nullable=False),
        sa.Column("currency", sa.String(), nullable=True),
        sa.Column("observed_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider"],
            ["providers.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_balance_snapshots_provider", "balance_snapshots", ["provider", "id"])
    op.create_table(
        "jobs",
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("job", sa.String(), nullable=False),
        sa.Column("last_started_at", UTCDateTime(), nullable=True),
        sa.Column("last_success_at", UTCDateTime(), nullable=True),
        sa.Column("last_failure_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("failing_since", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["provider"],
            ["providers.name"],
        ),
        sa.PrimaryKeyConstraint("provider", "job"),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("provider_order_id", sa.BigInteger(), nullable=True),
        sa.Column("service_id", sa.BigInteger(), nullable=True),
        sa.Column("link", sa.String(), nullable=True),
        sa.Column("quantity", sa.BigInteger(), nullable=True),
        sa.Column("custom_data", sa.String(), nullable=True),
        sa.Column("state", sa.String(), server_default="queued", nullable=False),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("status_raw", sa.String(), nullable=True),
        sa.Column("charge", Money(), nullable=True),
        sa.Column("start_counter", sa.BigInteger(), nullable=True),
        sa.Column("remains", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column(
            "created_at",
            UTCDateTime(),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column("submitted_at", UTCDateTime(), nullable=True),
        sa.Column("checked_at", UTCDateTime(), nullable=True),
        sa.Column("next_check_at", UTCDateTime(), nullable=True),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("submit_owner", sa.String(), nullable=True),
        sa.Column("submit_deadline", UTCDateTime(), nullable=True),
        sa.Column("missing_checks", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["provider"],
            ["providers.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "provider_order_id", name="uq_orders_provider_order"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_orders_due", "orders", ["provider", "state", "next_check_at"])
    op.create_table(
        "package_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("service_id", sa.BigInteger(), nullable=False),
        sa.Column("change", sa.String(), nullable=False),
        sa.Column("field", sa.String(), nullable=True),
        sa.Column("old_value", sa.String(), nullable=True),
        sa.Column("new_value", sa.String(), nullable=True),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider"],
            ["providers.name"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_package_changes_provider_service", "package_changes", ["provider", "service_id"]
    )
    op.create_table(
        "packages",
        sa.Column("provider", sa.String(), nullable=False),
        sa.Column("service_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("category", sa.String(), nullable=False),
        sa.Column("rate", Money(), nullable=False),
        sa.Column("min", sa.BigInteger(), nullable=False),
        sa.Column("max", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("removed_at", UTCDateTime(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider"],
            ["providers.name"],
        ),
        sa.PrimaryKeyConstraint("provider", "service_id"),
    )
    op.create_table(
        "order_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.Column("state_old", sa.String(), nullable=True),
        sa.Column("state_new", sa.String(), nullable=True),
        sa.Column("status_old", sa.String(), nullable=True),
        sa.Column("status_new", sa.String(), nullable=True),
        sa.Column("charge_old", Money(), nullable=True),
        sa.Column("charge_new", Money(), nullable=True),
        sa.Column("remains_old", sa.BigInteger(), nullable=True),
        sa.Column("remains_new", sa.BigInteger(), nullable=True),
        sa.Column("start_counter_old", sa.BigInteger(), nullable=True),
        sa.Column("start_counter_new", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_order_changes_order_id", "order_changes", ["order_id"])


def downgrade() -> None:
    op.drop_index("ix_order_changes_order_id", table_name="order_changes")
    op.drop_table("order_changes")
    op.drop_table("packages")
    op.drop_index("ix_package_changes_provider_service", table_name="package_changes")
    op.drop_table("package_changes")
    op.drop_index("ix_orders_due", table_name="orders")
    op.drop_table("orders")
    op.drop_table("jobs")
    op.drop_index("ix_balance_snapshots_provider", table_name="balance_snapshots")
    op.drop_table("balance_snapshots")
    op.drop_index("ix_alert_deliveries_next_attempt_at", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_table("providers")
    op.drop_table("alerts")
