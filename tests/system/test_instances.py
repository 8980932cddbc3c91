"""Several `syncd run` on one database, as real processes: the providers spread over the
instances, one instance works for each provider, SIGTERM and `kill -9` hand providers
over, and a one-shot `syncd sync` waits for the lease a daemon holds."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.simulator import SimulatedProvider, SimulatorServer
from syncd.storage import Storage
from tests.conftest import TOKEN
from tests.helpers import Daemon, query, syncd, wait_until

LEASE_TTL = 6  # seconds, the shortest syncd accepts: takeovers within a test's patience


@pytest.fixture
def servers() -> Iterator[list[SimulatorServer]]:
    with (
        SimulatorServer(SimulatedProvider(token=TOKEN)) as one,
        SimulatorServer(SimulatedProvider(token=TOKEN)) as two,
    ):
        yield [one, two]


def config_for(
    tmp_path: Path, db_url: str, servers: list[SimulatorServer], extra: str = ""
) -> Path:
    providers = "".join(
        f'[[providers]]\nname = "p{n}"\nurl = "{s.url}"\ntoken = "{TOKEN}"\ntimeout = "2s"\n'
        f"{extra}\n"
        for n, s in enumerate(servers)
    )
    path = tmp_path / "syncd.toml"
    path.write_text(
        f'[database]\nurl = "{db_url}"\n\n[logging]\nformat = "json"\n\n'
        f'[cluster]\nlease_ttl = "{LEASE_TTL}s"\n\n{providers}',
        encoding="utf-8",
    )
    return path


def holders(db_url: str) -> dict[str, str]:
    """Running leases by provider, as the database's clock has it."""
    rows = query(
        db_url,
        "SELECT name, holder FROM leases "
        "WHERE expires_at >= strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'",
    )
    return {str(name): str(holder) for name, holder in rows}


def daemon_in(config: Path, directory: Path, daemons: list[Daemon]) -> Daemon:
    """`syncd run` with a directory of its own (its systemd notify socket lives there)."""
    directory.mkdir()
    daemon = Daemon(config, directory)
    daemons.append(daemon)
    return daemon


def pid_of(holder: str) -> int:
    return int(holder.split(":")[1])


def test_two_instances_share_the_providers_and_one_takes_all_on_sigterm(
    tmp_path: Path, db_url: str, servers: list[SimulatorServer], daemons: list[Daemon]
) -> None:
    config = config_for(tmp_path, db_url, servers)
    first = daemon_in(config, tmp_path / "a", daemons)
    first.wait_for("READY=1")
    wait_until(lambda: len(holders(db_url)) == 2)  # alone: it holds both
    second = daemon_in(config, tmp_path / "b", daemons)
    second.wait_for("READY=1")
    # The newcomer gets its share within a lease time: one provider each.
    wait_until(lambda: len(set(holders(db_url).values())) == 2, timeout=3 * LEASE_TTL)
    assert {pid_of(h) for h in holders(db_url).values()} == {
        first.process.pid,
        second.process.pid,
    }
    # The newcomer went on with the schedule of the provider handed to it: nothing was
    # due, so no provider was asked for its catalog or balance a second time.
    assert [(s.provider.count("packages"), s.provider.count("balance")) for s in servers] == [
        (1, 1),
        (1, 1),
    ]
    code, took, _, _ = first.stop()
    assert code == 0 and took < 10
    # Released at once: the other takes it at its next look, not when a lease runs out.
    wait_until(
        lambda: [pid_of(h) for h in holders(db_url).values()] == [second.process.pid] * 2,
        timeout=LEASE_TTL,
    )
    # Handed over, not lost: no instance.lost alert.
    assert query(db_url, "SELECT count(*) FROM alerts WHERE event = 'instance.lost'") == [(0,)]


def test_a_killed_instance_s_providers_are_taken_over_within_a_lease_time(
    tmp_path: Path, db_url: str, servers: list[SimulatorServer], daemons: list[Daemon]
) -> None:
    config = config_for(tmp_path, db_url, servers)
    first = daemon_in(config, tmp_path / "a", daemons)
    second = daemon_in(config, tmp_path / "b", daemons)
    first.wait_for("READY=1")
    second.wait_for("READY=1")
    wait_until(lambda: len(set(holders(db_url).values())) == 2, timeout=3 * LEASE_TTL)
    killed = {h for h in holders(db_url).values() if pid_of(h) == first.process.pid}
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    wait_until(
        lambda: [pid_of(h) for h in holders(db_url).values()] == [second.process.pid] * 2,
        timeout=LEASE_TTL + LEASE_TTL / 3 + 3,
    )
    # Each provider taken from the dead instance raises instance.lost naming it.
    lost = query(db_url, "SELECT provider, payload FROM alerts WHERE event = 'instance.lost'")
    assert len(lost) == 1 and len(killed) == 1
    assert json.loads(str(lost[0][1]))["data"]["instance"] in killed


def test_a_one_shot_sync_waits_for_a_running_daemon_then_names_it(
    tmp_path: Path, db_url: str, servers: list[SimulatorServer], daemons: list[Daemon]
) -> None:
    config = config_for(tmp_path, db_url, servers)
    daemon = Daemon(config, tmp_path)
    daemons.append(daemon)
    daemon.wait_for("READY=1")
    wait_until(lambda: len(holders(db_url)) == 2)
    done = syncd(config, "sync", "balance", "--provider", "p0", "--wait", "2s")
    assert done.returncode == 1
    holder = holders(db_url)["p0"]
    assert done.stderr.splitlines() == [
        f"syncd: balance job for p0 failed: p0 is being worked on by {holder} "
        "(a running syncd); waited 2s"
    ]
    shown = json.loads(syncd(config, "status", "--json").stdout)
    assert [i["pid"] for i in shown["instances"]] == [daemon.process.pid]
    assert {p["name"]: p["lease"]["holder"] for p in shown["providers"]} == holders(db_url)
    assert f"  worked by  {holder}" in syncd(config, "status").stdout.splitlines()
    daemon.stop()
    done = syncd(config, "sync", "balance", "--provider", "p0", "--wait", "2s")
    assert done.returncode == 0, done.stderr  # released on SIGTERM: free at once


def test_two_instances_on_a_server_share_take_over_and_send_each_order_once(
    tmp_path: Path, server_db_url: str, server_storage: Storage, servers: list[SimulatorServer],
    daemons: list[Daemon],
) -> None:  # fmt: skip
    config = config_for(tmp_path, server_db_url, servers, extra='orders_interval = "1h"\n')
    first = daemon_in(config, tmp_path / "a", daemons)
    second = daemon_in(config, tmp_path / "b", daemons)
    first.wait_for("READY=1")
    second.wait_for("READY=1")

    def held() -> list[int]:
        return [pid_of(lease.holder) for _, lease in sorted(server_storage.lease_holders().items())]

    def count(query: str) -> int:
        with server_storage.engine.connect() as conn:
            return int(conn.execute(sa.text(query)).scalar_one())

    wait_until(lambda: len(set(held())) == 2, timeout=3 * LEASE_TTL)
    wait_until(lambda: count("SELECT count(DISTINCT provider) FROM packages") == 2)
    with server_storage.engine.begin() as conn:  # a consumer's INSERTs, for either provider
        for n in range(6):
            conn.execute(
                sa.text(
                    "INSERT INTO orders (provider, service_id, link, quantity) "
                    "VALUES (:p, 100, :link, 100)"
                ),
                {"p": f"p{n % 2}", "link": f"https://x.example/{n}"},
            )
    wait_until(lambda: count("SELECT count(*) FROM orders WHERE state = 'active'") == 6)
    assert [len(s.provider.orders) for s in servers] == [3, 3]  # each sent once
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    wait_until(lambda: held() == [second.process.pid] * 2, timeout=LEASE_TTL + LEASE_TTL / 3 + 3)
    assert count("SELECT count(*) FROM alerts WHERE event = 'instance.lost'") == 1
