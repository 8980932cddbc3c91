"""Alembic's migration scripts (``versions/``), run by ``syncd.storage.engine.migrate``."""

# The newest migration. Opening a database at this revision reads one row and imports
# nothing of Alembic (a tenth of a second for every command), and ``syncd status`` reads
# such a database without SQLAlchemy at all; a test checks that it names the head of the
# migration scripts. Kept here, apart from the engine, so that reading it imports nothing.
HEAD = "0016"
