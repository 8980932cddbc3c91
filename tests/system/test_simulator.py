"""The provider simulator itself, spoken to over real HTTP with plain httpx."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from syncd.simulator.world import default_catalog
from tests.conftest import TOKEN
from tests.fakes import FakeClock


def post(server: SimulatorServer, timeout: float = 5.0, **form: str) -> httpx.Response:
    return httpx.post(server.url, data={"api_token": TOKEN, **form}, timeout=timeout)


def test_all_four_actions_in_the_reference_dialect(server: SimulatorServer) -> None:
    packages = post(server, action="packages").json()
    assert len(packages) == len(default_catalog()) and {
        "service",
        "name",
        "type",
        "category",
        "rate",
        "min",
        "max",
    } <= set(packages[0])
    assert post(server, action="balance").json() == {"balance": "100.00", "currency": "USD"}
    order = post(
        server, action="add", package="100", link="https://x.example/p", quantity="100"
    ).json()["order"]
    assert post(server, action="status", order=str(order)).json()["status"] == "Pending"
    both = post(server, action="status", orders=f"{order},999").json()
    assert set(both) == {str(order), "999"} and "error" in json.dumps(both["999"]).lower()


def test_the_key_dialect_uses_its_own_field_names() -> None:
    sim = SimulatedProvider(dialect="key", token=TOKEN)
    with SimulatorServer(sim) as server:

        def call(**form: str) -> object:
            return httpx.post(server.url, data={"key": TOKEN, **form}).json()

        assert len(call(action="services")) == len(default_catalog())  # type: ignore[arg-type]
        assert call(action="packages") == {"error": "Incorrect request"}
        assert "order" in call(action="add", service="100", link="https://x", quantity="100")  # type: ignore[operator]
        assert httpx.post(server.url, data={"api_token": TOKEN, "action": "balance"}).json() == {
            "error": "Invalid API key"
        }


def test_a_wrong_token_is_an_error_object_with_http_200(server: SimulatorServer) -> None:
    reply = httpx.post(server.url, data={"api_token": "wrong", "action": "balance"})
    assert reply.status_code == 200 and reply.json() == {"error": "Invalid API key"}


def test_orders_progress_over_time_to_a_final_status() -> None:
    clock = FakeClock()
    sim = SimulatedProvider(token=TOKEN, clock=clock.monotonic, order_duration=100)
    (order_id,) = sim.create_orders(1, service=100)

    def status() -> dict[str, object]:
        reply = json.loads(
            sim.handle({"api_token": TOKEN, "action": "status", "order": str(order_id)}).body
        )
        assert isinstance(reply, dict)
        return reply

    seen = []
    for moment in (0, 15, 50, 150):
        clock.at(moment)
        seen.append(status()["status"])
    assert seen[:3] == ["Pending", "Processing", "In progress"]
    assert seen[3] in {"Completed", "Partial", "Canceled"}


def test_add_charges_the_balance_and_refuses_without_funds() -> None:
    sim = SimulatedProvider(token=TOKEN, balance=Decimal("1.00"))
    add = {"api_token": TOKEN, "action": "add", "package": "100", "link": "https://x"}
    ok = json.loads(sim.handle({**add, "quantity": "1000"}).body)  # 0.90 per 1000
    assert "order" in ok and sim.balance == Decimal("0.10000")
    refused = json.loads(sim.handle({**add, "quantity": "1000"}).body)
    assert refused == {"error": "Not enough funds on balance"} and len(sim.orders) == 1


def test_custom_comments_need_one_line_per_unit() -> None:
    sim = SimulatedProvider(token=TOKEN)
    add = {
        "api_token": TOKEN,
        "action": "add",
        "package": "102",
        "link": "https://x",
        "quantity": "5",
    }
    assert "error" in json.loads(sim.handle({**add, "custom_data": "a\nb"}).body)
    assert "order" in json.loads(sim.handle({**add, "custom_data": "a\nb\r\nc\nd\ne"}).body)


def test_more_than_max_ids_fails_the_whole_call(server: SimulatorServer) -> None:
    ids = server.provider.create_orders(101)
    assert "error" in post(server, action="status", orders=",".join(map(str, ids))).json()
    assert len(post(server, action="status", orders=",".join(map(str, ids[:100]))).json()) == 100


def test_not_found_entries_come_in_every_shape(server: SimulatorServer) -> None:
    reply = post(server, action="status", orders="1,2,3,4").json()
    shapes = {
        type(v).__name__ + ":" + (",".join(sorted(v)) if isinstance(v, dict) else "")
        for v in reply.values()
    }
    assert shapes == {"dict:error", "dict:errors", "str:"}
    assert any(isinstance(v, dict) and isinstance(v.get("error"), list) for v in reply.values())


def test_numbers_as_json_numbers() -> None:
    with SimulatorServer(SimulatedProvider(token=TOKEN, numbers_as_json=True)) as server:
        first = post(server, action="packages").json()[0]
        assert isinstance(first["service"], int) and isinstance(first["min"], int)
        assert '"rate": 0.9000' in post(server, action="packages").text
        assert post(server, action="balance").json()["balance"] == 100.0


@pytest.mark.parametrize(
    ("fault", "status", "check"),
    [
        (Fault.HTML_502, 502, lambda r: b"502 Bad Gateway" in r.content),
        (Fault.HTML_200, 200, lambda r: r.content.startswith(b"<!DOCTYPE html>")),
        (Fault.RATE_LIMIT, 429, lambda r: r.headers["retry-after"] == "1"),
        (Fault.ERROR_STRING, 200, lambda r: isinstance(r.json()["error"], str)),
        (Fault.ERROR_LIST, 200, lambda r: isinstance(r.json()["error"], list)),
        (Fault.ERRORS_LIST, 200, lambda r: isinstance(r.json()["errors"], list)),
        (Fault.ERRORS_OBJECT, 200, lambda r: isinstance(r.json()["errors"], dict)),
        (Fault.NOT_A_LIST, 200, lambda r: isinstance(r.json(), dict)),
        (Fault.EMPTY_LIST, 200, lambda r: r.json() == []),
    ],
)
def test_faults_answer_once_then_normal_service_resumes(
    server: SimulatorServer, fault: Fault, status: int, check: object
) -> None:
    server.provider.inject(fault, actions=["packages"])
    assert post(server, action="balance").status_code == 200  # other actions unaffected
    faulty = post(server, action="packages")
    assert faulty.status_code == status and check(faulty)  # type: ignore[operator]
    assert len(post(server, action="packages").json()) == len(default_catalog())


def test_truncated_json_is_cut_in_the_middle(server: SimulatorServer) -> None:
    server.provider.inject(Fault.TRUNCATED_JSON)
    body = post(server, action="packages").content
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    assert body.startswith(b'[{"service"')


def test_timeout_and_reset_send_no_reply(server: SimulatorServer) -> None:
    server.provider.inject(Fault.TIMEOUT)
    with pytest.raises(httpx.ReadTimeout):
        post(server, timeout=0.3, action="balance")
    server.provider.inject(Fault.RESET)
    with pytest.raises(httpx.RemoteProtocolError):
        post(server, action="balance")


@pytest.fixture
def dripping() -> Iterator[SimulatorServer]:
    """A simulator whose dripped replies take 0.1 s a byte."""
    with SimulatorServer(SimulatedProvider(token=TOKEN, drip_interval=0.1)) as running:
        yield running


def handler_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """The server's connection threads started since ``before`` that still run."""
    return [
        t
        for t in threading.enumerate()
        if t not in before and "process_request_thread" in t.name and t.is_alive()
    ]


def wait_until_ended(before: set[threading.Thread], within: float) -> float:
    """Seconds until those threads ended; fails after ``within``."""
    started = time.monotonic()
    while handler_threads(before):
        assert time.monotonic() - started < within, "a dripping thread is still running"
        time.sleep(0.01)
    return time.monotonic() - started


def test_drip_sends_the_whole_reply_slower_than_any_read_times_out() -> None:
    sim = SimulatedProvider(token=TOKEN, drip_interval=0.02)
    with SimulatorServer(sim) as server:
        expected = post(server, action="balance").content
        sim.inject(Fault.DRIP, actions=["balance"])
        started = time.monotonic()
        dripped = post(server, timeout=0.3, action="balance")  # a read never waits 0.3 s
        elapsed = time.monotonic() - started

    assert dripped.status_code == 200 and dripped.content == expected
    assert elapsed >= len(expected) * 0.02 > 0.3  # longer than the timeout, all the same


def test_drip_stops_soon_after_the_client_hangs_up(
    dripping: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    dripping.provider.inject(Fault.DRIP, actions=["packages"])
    before = set(threading.enumerate())
    with (
        httpx.Client() as client,
        client.stream("POST", dripping.url, data={"api_token": TOKEN, "action": "packages"}) as r,
    ):
        assert next(r.iter_raw(1)) == b"["  # then hang up, with thousands of bytes to come
    assert handler_threads(before)

    assert wait_until_ended(before, within=1.0) < 1.0  # within an interval or so, not minutes
    assert capsys.readouterr().err == ""  # a client hanging up is no error worth a traceback


def test_drip_stops_at_once_when_the_server_stops(capsys: pytest.CaptureFixture[str]) -> None:
    server = SimulatorServer(SimulatedProvider(token=TOKEN, drip_interval=5.0)).start()
    server.provider.inject(Fault.DRIP, actions=["balance"])
    before = set(threading.enumerate())
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", server.url, data={"api_token": TOKEN, "action": "balance"}) as r,
    ):
        assert r.status_code == 200  # the headers came at once; the body's bytes take 5 s each
        server.stop()
        with pytest.raises(httpx.RemoteProtocolError):  # the body ends short, at once
            r.read()

    assert wait_until_ended(before, within=1.0) < 1.0
    assert capsys.readouterr().err == ""


def test_a_fault_after_processing_still_creates_the_order(server: SimulatorServer) -> None:
    server.provider.inject(Fault.HTML_502, actions=["add"], after_processing=True)
    reply = post(server, action="add", package="100", link="https://x", quantity="100")
    assert reply.status_code == 502
    assert len(server.provider.orders) == 1 and server.provider.count("add") == 1


def test_a_fault_before_processing_creates_nothing(server: SimulatorServer) -> None:
    server.provider.inject(Fault.HTML_502, actions=["add"])
    assert (
        post(server, action="add", package="100", link="https://x", quantity="100").status_code
        == 502
    )
    assert server.provider.orders == {}


def test_latency_is_added_to_every_request(server: SimulatorServer) -> None:
    server.provider.latency = 0.2
    started = time.monotonic()
    post(server, action="balance")
    assert time.monotonic() - started >= 0.2


def test_calls_are_recorded_without_the_token(server: SimulatorServer) -> None:
    post(server, action="status", orders="1,2,3")
    (call,) = server.provider.status_calls()
    assert call.ids == ["1", "2", "3"]
    assert TOKEN not in repr(call)


def test_run_alone_it_prints_a_config_syncd_accepts_as_it_is(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "syncd.simulator", "--token", "tok-123456789"]
    simulator = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert simulator.stdout is not None
        assert simulator.stdout.readline().startswith("url http://127.0.0.1:")
        printed = []
        while not (line := simulator.stdout.readline()).startswith("orders_interval"):
            printed.append(line)
        printed.append(line)
        (tmp_path / "syncd.toml").write_text("".join(printed), encoding="utf-8")
        checked = subprocess.run(
            [sys.executable, "-m", "syncd", "check"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    assert checked.returncode == 0, checked.stderr
    assert "provider sim: ok, balance 100 USD" in checked.stdout


def test_run_alone_it_refuses_more_ids_than_max_ids() -> None:
    command = [sys.executable, "-m", "syncd.simulator", "--token", TOKEN, "--orders", "60",
               "--max-ids", "50"]  # fmt: skip
    simulator = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert simulator.stdout is not None
        url = simulator.stdout.readline().split()[1]
        first, last = map(int, simulator.stdout.readline().split()[1:])
        ids = [str(i) for i in range(first, last + 1)]

        def status(names: list[str]) -> object:
            form = {"api_token": TOKEN, "action": "status", "orders": ",".join(names)}
            return httpx.post(url, data=form, timeout=10).json()

        refused, taken = status(ids[:51]), status(ids[:50])
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    assert refused == {"error": "Maximum 50 orders per request"}
    assert isinstance(taken, dict) and len(taken) == 50


def test_run_alone_it_writes_the_links_of_the_orders_it_took(tmp_path: Path) -> None:
    links = tmp_path / "links.txt"
    command = [sys.executable, "-m", "syncd.simulator", "--token", TOKEN, "--orders", "3",
               "--links", str(links)]  # fmt: skip
    simulator = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert simulator.stdout is not None
        url = simulator.stdout.readline().split()[1]
        taken = [
            httpx.post(url, data={"api_token": TOKEN, "action": "add", "package": "100",
                                  "link": f"https://x.example/{n}", "quantity": "100"},
                       timeout=10).json()["order"]
            for n in (1, 1, 2)
        ]  # fmt: skip
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    # The three orders created up front are not among them; a link sent twice is twice.
    assert links.read_text(encoding="utf-8").splitlines() == [
        f"{taken[0]} https://x.example/1", f"{taken[1]} https://x.example/1",
        f"{taken[2]} https://x.example/2",
    ]  # fmt: skip


def test_its_help_shows_every_default() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "syncd.simulator", "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    for default in ("(default: api_token)", "(default: sim-token)", "(default: 100.00)",
                    "(default: 20.0)"):  # fmt: skip
        assert default in " ".join(shown.split())
