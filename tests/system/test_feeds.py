"""Change feeds without gaps: a consumer following ``order_changes``, ``package_changes``
or ``alerts`` with ``WHERE id > :cursor ORDER BY id`` sees every committed row, however
many writers commit in whatever order.

The writers here go through the storage methods syncd itself writes feeds with; each
commit is held back a random few milliseconds after the rows were inserted, which is
where a sequence's ids and the commit order part ways. A reader polls as fast as it can
and keeps its cursor at the highest id it saw, as a consumer would.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.models import ChangeKind, Event
from syncd.plans import AlertIntent, CatalogPlan, PackageChange
from syncd.storage import Storage, open_storage

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
WRITERS = 4
WRITES = 25  # transactions per writer


def _orders(storage: Storage, writer: int, n: int) -> None:
    storage.track_orders(f"p{writer}", [n * 10 + k + 1 for k in range(3)], NOW)


def _packages(storage: Storage, writer: int, n: int) -> None:
    changes = [PackageChange(n * 10 + k + 1, ChangeKind.ADDED) for k in range(3)]
    storage.apply_catalog_reply(
        f"p{writer}", lambda _: CatalogPlan(f"p{writer}", NOW, changes=changes)
    )


def _alerts(storage: Storage, writer: int, n: int) -> None:
    alerts = [AlertIntent(Event.PROVIDER_DOWN, f"p{writer}", f"down {n}.{k}") for k in range(3)]
    storage._write(lambda conn: storage._insert_alerts(conn, alerts, NOW))


FEEDS: dict[str, Callable[[Storage, int, int], None]] = {
    "order_changes": _orders,
    "package_changes": _packages,
    "alerts": _alerts,
}


@pytest.mark.parametrize("feed", FEEDS)
def test_a_reader_following_a_feed_misses_no_committed_row(any_db_url: str, feed: str) -> None:
    write = FEEDS[feed]
    writers = [open_storage(any_db_url, busy_timeout=5.0) for _ in range(WRITERS)]
    reader = sa.create_engine(any_db_url)
    late = random.Random(7)

    def commit_late(*_: Any) -> None:
        # Between the inserts and the commit: where ids and commit order part ways.
        threading.Event().wait(late.uniform(0, 0.01))

    writers[0].register_providers([(f"p{w}", "https://panel.example/v2") for w in range(WRITERS)])
    for storage in writers:
        sa.event.listen(storage.engine, "commit", commit_late)
    seen: list[int] = []
    done = threading.Event()
    table = sa.table(feed, sa.column("id"))

    def follow() -> None:
        cursor = 0
        with reader.connect() as conn:
            while True:
                finished = done.is_set()  # read once more after the last commit
                ids = list(
                    conn.execute(
                        sa.select(table.c.id).where(table.c.id > cursor).order_by(table.c.id)
                    ).scalars()
                )
                conn.commit()  # a fresh snapshot for the next look
                if ids:
                    seen.extend(ids)
                    cursor = ids[-1]
                if finished:
                    return
                # A breath for the writer threads: a loop that never lets go of the GIL
                # would slow them down a hundredfold (a reader in another process would not).
                done.wait(0.0005)

    def work(writer: int) -> None:
        for n in range(WRITES):
            write(writers[writer], writer, n)

    following = threading.Thread(target=follow)
    following.start()
    threads = [threading.Thread(target=work, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    following.join()
    with reader.connect() as conn:
        committed = list(conn.execute(sa.select(table.c.id).order_by(table.c.id)).scalars())
    reader.dispose()
    for storage in writers:
        storage.close()
    assert len(committed) == WRITERS * WRITES * 3
    missed = sorted(set(committed) - set(seen))
    assert missed == [], f"the reader skipped {len(missed)} committed rows: {missed[:10]}"
    assert seen == committed  # and saw them in id order, each once
