"""Three processes against one provider's published limit: two `syncd run` daemons and a
loop of one-shot `syncd order add`, sharing one database, more orders queued than the
limit lets through. The simulator's own limiter, in this process, counts what it accepted
in any window and the 429s it answered. Used by the system test (a short window) and by
``tests/benchmarks/limits.py`` (the provider's minute, for three minutes)."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from syncd.limits import CallLimit
from syncd.simulator import SimulatedProvider, SimulatorServer
from tests.conftest import TOKEN, write_config
from tests.helpers import Daemon, syncd

QUEUE_EVERY = 0.25  # seconds between two orders a consumer queues by SQL


@dataclass(frozen=True)
class Figures:
    limit: CallLimit
    seconds: float
    adds: int  # add calls the provider accepted
    busiest: int  # the most it accepted in any window of the limit
    rate_limited: int  # add calls it answered 429
    by_command: int  # orders `syncd order add` sent itself
    by_daemons: int  # orders queued by SQL, sent by a daemon
    commands: int  # `syncd order add` runs

    def lines(self) -> list[str]:
        windows = self.seconds / self.limit.seconds
        return [
            f"limit             add = {self.limit}, {self.seconds:.0f} s ({windows:.1f} windows)",
            f"adds accepted     {self.adds} (at most {self.limit.count} a window: "
            f"{self.limit.count * windows:.0f} in all)",
            f"busiest window    {self.busiest} of {self.limit.count}",
            f"429s answered     {self.rate_limited}",
            f"sent by daemons   {self.by_daemons}",
            f"sent by commands  {self.by_command} (of {self.commands} `syncd order add`)",
        ]


def three_processes(tmp_path: Path, limit: CallLimit, seconds: float) -> Figures:
    db_url = f"sqlite:///{tmp_path / 'syncd.db'}"
    window = f"{limit.count}/{int(limit.seconds)}s"
    sim = SimulatedProvider(token=TOKEN, limits={"add": window}, order_duration=10**6)
    daemons: list[Daemon] = []
    with SimulatorServer(sim) as server:
        config = write_config(
            tmp_path / "syncd.toml", db_url, server.url, timeout="5s",
            extra=f'limits = {{ add = "{window}" }}\norders_interval = "5s"',
        )  # fmt: skip
        assert syncd(config, "sync", "catalog").returncode == 0
        stop = threading.Event()
        commands = 0

        def queue_by_sql() -> None:
            n = 0
            with sqlite3.connect(tmp_path / "syncd.db", timeout=30) as conn:
                while not stop.wait(QUEUE_EVERY):
                    n += 1
                    conn.execute(
                        "INSERT INTO orders (provider, service_id, link, quantity) "
                        "VALUES ('sim', 100, ?, 100)",
                        (f"https://x.example/db/{n}",),
                    )
                    conn.commit()

        def add_by_command() -> None:
            nonlocal commands
            while not stop.is_set():
                commands += 1
                link = f"https://x.example/cli/{commands}"
                syncd(config, "order", "add", "--provider", "sim", "--package", "100",
                      "--link", link, "--quantity", "100")  # fmt: skip

        for i in range(2):
            (tmp_path / f"d{i}").mkdir()
            daemons.append(Daemon(config, tmp_path / f"d{i}", log_to=tmp_path / f"d{i}.log"))
        threads = [threading.Thread(target=f) for f in (queue_by_sql, add_by_command)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            time.sleep(seconds)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            for daemon in daemons:
                daemon.stop()
                daemon.close()
        took = time.monotonic() - started
        adds = [c for c in sim.calls if c.action == "add"]
    links = [c.fields.get("link", "") for c in adds]
    return Figures(
        limit=limit,
        seconds=took,
        adds=len(adds) - sim.limiter.rate_limited_by["add"],
        busiest=sim.limiter.busiest["add"],
        rate_limited=sim.limiter.rate_limited_by["add"],
        by_command=sum("/cli/" in link for link in links),
        by_daemons=sum("/db/" in link for link in links),
        commands=commands,
    )
