"""Benchmark: reading 100-order status replies, and the CPU of one status call.

Not a test: it prints figures. Run it from the repository root:

    python tests/benchmarks/replies.py
    python tests/benchmarks/replies.py --against HEAD~3   # and the same for another commit

A status sweep of 100,000 orders makes 1,000 calls of 100 ids and may use 3 s of CPU in
all: 3 ms per call for everything it does, the call, reading the reply, the database. That
budget is the one target; each figure here is printed with its share of it:

- decoding one reply's JSON the way the client does (the standard library, every JSON
  number a ``Decimal``), and with orjson and msgspec when they are installed (they are no
  dependency of syncd; lines for a missing one say so). orjson has no ``parse_float``: a
  charge sent as a JSON number comes back a float, and an integer past 64 bits too, so
  money would have to be read again from the raw text; its line says when the value
  differs. msgspec's ``float_hook=Decimal`` gives the same value as the client's;
- ``parse_statuses`` on the decoded reply;
- the client's CPU per ``statuses()`` call against the simulator on loopback (in its own
  process, so its CPU is not counted here), beside bare httpx posting the same form and
  reading the reply: the floor of any client built on httpx.

The replies are the simulator's own: orders at every stage of their life (so "" for a
start count not known yet, a charge cut for a partial), a few ids it does not know
(answered in each of its "not found" shapes), with numbers sent as text or as JSON
numbers, and with the varied status spellings of ``--spellings``.

``--against REV`` takes ``syncd/`` as it is at that git revision into a temporary
directory and prints its parse and client figures too, measured the same way: before and
after a change, on the same machine, minutes apart. A shared machine is noisy: every
figure is the range over several rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import importlib
import importlib.abc
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import timeit
from collections.abc import Callable
from decimal import Decimal
from io import BytesIO
from typing import Any

TOKEN = "bench-token"
ORDERS = 100  # ids per status call, as the sweep sends them
UNKNOWN = 4  # of which the provider does not know some (each "not found" shape once)
ROUNDS = 5
BUDGET_MS = 3.0  # CPU per call of the whole sweep: 3 s for 1,000 calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000, help="status calls per round")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--against", metavar="REV", help="also measure syncd/ of this revision")
    parser.add_argument("--only-syncd", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    bodies = replies()
    if args.only_syncd:  # the other revision's code really is the one measured
        import syncd  # noqa: PLC0415

        assert syncd.__file__ is not None
        assert syncd.__file__.startswith(os.environ["PYTHONPATH"]), syncd.__file__
    else:
        sizes = ", ".join(f"{name} {len(body):,} bytes" for name, body in bodies.items())
        print(f"one reply: {ORDERS} orders ({UNKNOWN} unknown), {sizes}")
        print(f"target: the whole sweep within {BUDGET_MS:g} ms of CPU per call (% is of that)")
        print(f"-- decoding one reply, us of CPU (lowest-highest of {args.rounds} rounds)")
        for name, body in bodies.items():
            decoders(name, body, args.rounds)
    label = "this tree" if not args.only_syncd else os.environ.get("BENCH_LABEL", "?")
    print(f"-- syncd of {label}")
    for name, body in bodies.items():
        parse(name, body, args.rounds)
    client_cpu(args.calls, args.rounds, bare=not args.only_syncd)
    if args.against:
        against(args.against, args.calls, args.rounds)


# -- the replies -------------------------------------------------------------------------


def replies() -> dict[str, bytes]:
    """The simulator's answers to one status call, as the bytes it sends."""
    return {
        "text numbers": reply(),
        "JSON numbers": reply(numbers_as_json=True),
        "spellings": reply(spellings=True),
    }


def reply(**options: Any) -> bytes:
    from syncd.simulator.provider import SimulatedProvider  # noqa: PLC0415

    now = [0.0]
    provider = SimulatedProvider(token=TOKEN, clock=lambda: now[0], order_duration=20.0, **options)
    ids: list[int] = []
    # Placed 0.3 s apart over 28.8 s, orders of 20 s: a third done (Completed, Partial,
    # Canceled), the rest In progress, Processing or Pending (a start count of "").
    for i in range(ORDERS - UNKNOWN):
        now[0] = i * 0.3
        ids += provider.create_orders(1)
    now[0] = (ORDERS - UNKNOWN) * 0.3
    unknown = [1_000_000 + i for i in range(UNKNOWN)]  # one id per "not found" shape
    form = {"api_token": TOKEN, "action": "status", "orders": ",".join(map(str, ids + unknown))}
    return provider.handle(form).body


def asked(body: bytes) -> list[int]:
    return [int(key) for key in json.loads(body)]


# -- decoding ----------------------------------------------------------------------------


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def decoders(name: str, body: bytes, rounds: int) -> None:
    """Each decoder's time, and whether it gives the value the client reads today."""
    expected = json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    found: dict[str, Callable[[bytes], object] | str] = {
        "json, parse_float=Decimal": lambda b: json.loads(
            b, parse_float=Decimal, parse_constant=_no_constant
        )
    }
    try:
        import orjson  # noqa: PLC0415

        found["orjson"] = orjson.loads
    except ImportError:
        found["orjson"] = "not installed (pip install orjson to compare)"
    try:
        import msgspec  # noqa: PLC0415

        found["msgspec, float_hook=Decimal"] = msgspec.json.Decoder(float_hook=Decimal).decode
    except ImportError:
        found["msgspec, float_hook=Decimal"] = "not installed (pip install msgspec to compare)"
    for decoder, decode in found.items():
        if isinstance(decode, str):
            print(f"  {name:13} {decoder:28} {decode}")
            continue
        value = decode(body)
        same = value == expected and not _has_float(value)
        note = "same value" if same else "DIFFERENT value: money as float"
        times = per_call(functools.partial(decode, body), rounds)
        print(f"  {name:13} {decoder:28} {spread(times)} {share(times)}  {note}")


def _has_float(value: object) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


# -- parsing -----------------------------------------------------------------------------


def parse(name: str, body: bytes, rounds: int) -> None:
    from syncd.provider.replies import parse_statuses  # noqa: PLC0415

    reply = json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    ids = asked(body)
    times = per_call(lambda: parse_statuses(reply, ids), rounds)
    print(f"  parse_statuses, {name:13} {spread(times)} us per reply {share(times)}")


# -- one call on loopback ----------------------------------------------------------------


def client_cpu(calls: int, rounds: int, *, bare: bool) -> None:
    """CPU seconds of this process per status call of 100 ids, simulator on loopback."""
    simulator = subprocess.Popen(
        [sys.executable, "-m", "syncd.simulator", "--token", TOKEN, "--orders", str(ORDERS),
         "--latency", "0", "--order-duration", "86400"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert simulator.stdout is not None
    try:
        url = simulator.stdout.readline().split()[1]
        first, last = map(int, simulator.stdout.readline().split()[1:])
        ids = list(range(first, last + 1))
        ways = {"ProviderClient.statuses": statuses(url, ids)}
        if bare:
            ways["bare httpx POST"] = bare_posts(url, ids)
        cpu: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(rounds):  # taking turns: a busy spell of the machine hits both
            for way, run in ways.items():
                cpu[way].append(run_calls(run, calls) * 1000)
        for way, figures in cpu.items():
            note = "" if way.startswith("Provider") else " (the floor of any client on httpx)"
            in_us = [f * 1000 for f in figures]
            print(f"  {way:24} {spread(figures, '.3f')} ms CPU per call {share(in_us)}{note}")
        if bare:
            sniffing(ways["bare httpx POST"])
    finally:
        simulator.terminate()
        simulator.communicate(timeout=30)


class _Counting(importlib.abc.MetaPathFinder):
    """Counts the searches for one module, and finds nothing."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.searches = 0

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname == self.name:
            self.searches += 1


def sniffing(run: Callable[[int], Any]) -> None:
    """httpcore imports sniffio in every request to learn which event loop runs it. When
    sniffio is not installed (anyio no longer needs it), each import fails, and a failed
    import is not remembered: every one searches all of sys.path again."""
    if importlib.util.find_spec("sniffio") is not None:
        print("  (sniffio is installed: httpcore's imports of it cost nothing)")
        return
    counter = _Counting("sniffio")
    sys.meta_path.insert(0, counter)
    try:
        asyncio.run(run(50))
    finally:
        sys.meta_path.remove(counter)

    def failed_import() -> None:
        with contextlib.suppress(ImportError):
            importlib.import_module("sniffio")

    each = min(per_call(failed_import, 3))
    tries = counter.searches / 50
    print(
        f"  of which httpcore's imports of sniffio, not installed: {tries:g} per call, "
        f"{each:.0f} us each, {tries * each / 1000:.3f} ms per call"
    )


def statuses(url: str, ids: list[int]) -> Callable[[int], Any]:
    from syncd.provider import DIALECTS, ProviderClient  # noqa: PLC0415
    from syncd.secret import Secret  # noqa: PLC0415

    async def run(calls: int) -> None:
        client = ProviderClient(
            name="bench", url=url, token=Secret(TOKEN), dialect=DIALECTS["api_token"]
        )
        async with client:
            for _ in range(calls):
                found = await client.statuses(ids)
                assert len(found) == len(ids)

    return run


def bare_posts(url: str, ids: list[int]) -> Callable[[int], Any]:
    import httpx  # noqa: PLC0415

    form = {"api_token": TOKEN, "action": "status", "orders": ",".join(map(str, ids))}

    async def run(calls: int) -> None:
        async with httpx.AsyncClient() as http:
            for _ in range(calls):
                response = await http.post(url, data=form)
                assert response.content

    return run


def run_calls(run: Callable[[int], Any], calls: int) -> float:
    """CPU seconds per call, after a few calls to open the connection and warm up."""

    async def measured() -> float:
        await run(20)
        started = time.process_time()  # every thread of the process
        await run(calls)
        return (time.process_time() - started) / calls

    return asyncio.run(measured())


# -- another revision --------------------------------------------------------------------


def against(revision: str, calls: int, rounds: int) -> None:
    """This script's syncd figures again, with ``syncd/`` taken from ``revision``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "syncd"], capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        env = {**os.environ, "PYTHONPATH": tmp, "BENCH_LABEL": revision}
        script = [sys.executable, __file__, "--only-syncd", "--calls", str(calls)]
        subprocess.run([*script, "--rounds", str(rounds)], env=env, check=True)


# -- timing ------------------------------------------------------------------------------


def per_call(action: Callable[[], object], rounds: int) -> list[float]:
    """Microseconds of CPU per call of ``action``, one figure per round (CPU time, not wall
    time: on a shared machine, time other processes take is not counted). The garbage
    collector runs, as it does in the daemon: the objects a parse makes are part of its
    cost."""
    timer = timeit.Timer(action, setup=gc.enable, timer=time.process_time)
    number, _ = timer.autorange()
    return [t / number * 1e6 for t in timer.repeat(repeat=rounds, number=number)]


def share(us: list[float]) -> str:
    """The share of the sweep's budget per call, at the lowest and highest figure."""
    return f"{min(us) / BUDGET_MS / 10:.1f}-{max(us) / BUDGET_MS / 10:.1f} %".rjust(12)


def spread(figures: list[float], form: str = ".1f") -> str:
    low, high = min(figures), max(figures)
    return f"{low:{form}}-{high:{form}}".rjust(13)


if __name__ == "__main__":
    main()
