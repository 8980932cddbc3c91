"""SQL literals built from syncd's own names: states, kinds, the held prefix.

A query that must hold a value as text rather than as a bound parameter (SQLite uses a
partial index only for a WHERE that repeats the index's condition literally; a status
count reads best as one fixed statement) writes it with ``quoted``, from the enum or
constant that names it, so that renaming a state cannot leave a query behind.
"""

from __future__ import annotations


def quoted(*values: str) -> str:
    """``values`` as SQL string literals, comma-separated: ``'queued', 'submitting'``."""
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


def starts_with(column: str, prefix: str) -> str:
    """``column`` begins with ``prefix``, as SQL: ``substr(error, 1, 6) = 'held: '``.
    Compared as a whole, not with LIKE: neither case nor a ``_`` in ``prefix`` may
    widen it, and no ``%`` may appear in a statement (the drivers' paramstyle)."""
    return f"substr({column}, 1, {len(prefix)}) = {quoted(prefix)}"
