"""Alembic environment: syncd runs migrations itself at start-up on its own connection."""

from alembic import context

from syncd.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("syncd migrations run through syncd.storage.engine.migrate()")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite can only ALTER a table by copying it
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
