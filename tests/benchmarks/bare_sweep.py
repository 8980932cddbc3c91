"""The reference a status sweep is measured against: the least a script can do.

    python tests/benchmarks/bare_sweep.py DATABASE URL TOKEN [--concurrency 4]

Reads every active order, asks the provider for 100 at a time with ``concurrency``
calls in flight (httpx), and writes each batch's status with one ``executemany`` and a
commit. No change log, no state machine, no validation, no retries: what syncd adds on
top of this is what the comparison prices.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3

import httpx


async def sweep(database: str, url: str, token: str, concurrency: int) -> int:
    db = sqlite3.connect(database, isolation_level=None)
    rows = db.execute("SELECT id, provider_order_id FROM orders WHERE state = 'active'").fetchall()
    local = {poid: oid for oid, poid in rows}
    batches = [list(local)[i : i + 100] for i in range(0, len(local), 100)]
    queue: asyncio.Queue[list[int]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            form = {"key": token, "action": "status", "orders": ",".join(map(str, batch))}
            reply = json.loads((await client.post(url, data=form)).content)
            db.execute("BEGIN")
            db.executemany(
                "UPDATE orders SET status = ?, charge = ?, remains = ? WHERE id = ?",
                [
                    (entry.get("status"), entry.get("charge"), entry.get("remains"), local[int(k)])
                    for k, entry in reply.items()
                    if isinstance(entry, dict)
                ],
            )
            db.execute("COMMIT")

    async with httpx.AsyncClient() as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return len(batches)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("database")
    parser.add_argument("url")
    parser.add_argument("token")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    calls = asyncio.run(sweep(args.database, args.url, args.token, args.concurrency))
    print(f"bare sweep: {calls} calls")


if __name__ == "__main__":
    main()
