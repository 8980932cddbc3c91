"""PostgreSQL notifications: ``syncd_orders`` when an order becomes ``queued`` (a
consumer's plain INSERT included), so a running ``syncd run`` sends it at once; and
``syncd_changes`` when rows are added to a change feed, so ``syncd changes --follow``
prints them at once. SQLite has no notifications: both are polled there.

A notification's payload is at most 8000 bytes and an oversized one would fail the
consumer's INSERT: the provider name in ``syncd_orders`` is cut to 100 characters, and
the feed's payload is only its table name.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FEEDS = ("order_changes", "package_changes", "alerts")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION syncd_notify_orders() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('syncd_orders', coalesce(left(NEW.provider, 100), ''));
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER syncd_orders_queued AFTER INSERT OR UPDATE OF state ON orders
        FOR EACH ROW WHEN (NEW.state = 'queued') EXECUTE FUNCTION syncd_notify_orders()
        """
    )
    op.execute(
        """
        CREATE FUNCTION syncd_notify_changes() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('syncd_changes', TG_TABLE_NAME);
            RETURN NULL;
        END $$
        """
    )
    for table in FEEDS:
        op.execute(
            f"CREATE TRIGGER syncd_{table}_added AFTER INSERT ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION syncd_notify_changes()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in FEEDS:
        op.execute(f"DROP TRIGGER IF EXISTS syncd_{table}_added ON {table}")
    op.execute("DROP FUNCTION IF EXISTS syncd_notify_changes()")
    op.execute("DROP TRIGGER IF EXISTS syncd_orders_queued ON orders")
    op.execute("DROP FUNCTION IF EXISTS syncd_notify_orders()")
