"""The Grafana dashboard's queries against a real Prometheus: every one parses and
evaluates, and the runway appears only while a balance falls, once per provider however
many instances exported it."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import wait_until
from tests.unit.test_metrics import dashboard_queries, targets, variables


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away Prometheus on loopback that scrapes nothing: enough to parse and
    evaluate every query (with no data, each answers an empty result)."""
    program = shutil.which("prometheus")
    if program is None:
        pytest.skip("prometheus is not installed here, so the dashboard's queries go unchecked")
    root = tmp_path_factory.mktemp("prometheus")
    (root / "prometheus.yml").write_text("scrape_configs: []\n", encoding="utf-8")
    port = free_port()
    with (root / "prometheus.log").open("w") as log:
        process = subprocess.Popen(
            [program, f"--config.file={root / 'prometheus.yml'}",
             f"--storage.tsdb.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (root / "prometheus.log").read_text()
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, timeout=30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_every_query_of_the_dashboard_evaluates(prometheus: str) -> None:
    now = time.time()
    problems = []
    for (panel, target), query in zip(targets(), dashboard_queries(), strict=True):
        if target.get("instant"):
            reply = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10)
        else:
            reply = httpx.get(
                f"{prometheus}/api/v1/query_range", timeout=10,
                params={"query": query, "start": now - 3600, "end": now, "step": 60},
            )  # fmt: skip
        if reply.json().get("status") != "success":
            problems.append((panel["title"], query, reply.text))
    assert not problems


def test_the_variables_ask_for_labels_prometheus_knows(prometheus: str) -> None:
    for name in ("provider", "instance"):
        spec = re.fullmatch(r"label_values\((\w+), (\w+)\)", variables()[name]["query"])
        assert spec, variables()[name]
        reply = httpx.get(
            f"{prometheus}/api/v1/label/{spec[2]}/values", params={"match[]": spec[1]}, timeout=10
        )
        assert reply.json()["status"] == "success", reply.text


# Eight hours of balances every five minutes: one that stays put, one that falls by 1 each
# time (12 an hour), one falling alike that changed hands at 4 h (each instance
# exporting it while it held the lease, both at the handover), and one that one big
# order's charge lowered at 5 h and that stayed put since (no spending for 3 hours: the
# 6-hour slope still falls, but that is no runway).
RUNWAY_TEST = """\
rule_files: []
tests:
  - interval: 5m
    input_series:
      - series: 'syncd_balance{{provider="flat", currency="USD", instance="a"}}'
        values: '500x96'
      - series: 'syncd_balance{{provider="spending", currency="USD", instance="a"}}'
        values: '1008-1x96'
      - series: 'syncd_balance{{provider="handover", currency="USD", instance="a"}}'
        values: '1008-1x48'
      - series: 'syncd_balance{{provider="handover", currency="USD", instance="b"}}'
        values: '_x48 960-1x48'
      - series: 'syncd_balance{{provider="one-charge", currency="USD", instance="a"}}'
        values: '500x60 300x36'
    promql_expr_test:
      - expr: 'round({runway})'
        eval_time: 8h
        exp_samples:
          - labels: '{{provider="spending", currency="USD"}}'
            value: 76
          - labels: '{{provider="handover", currency="USD"}}'
            value: 76
"""


def test_the_runway_shows_hours_left_only_while_the_balance_falls(tmp_path: Path) -> None:
    program = shutil.which("promtool")
    if program is None:
        pytest.skip("promtool is not installed here, so the runway query goes unevaluated")
    (runway,) = [
        query
        for (panel, _), query in zip(targets(), dashboard_queries(), strict=True)
        if "runway" in panel["title"].lower()
    ]
    # 912 left at 12 an hour: 76 hours, and no series at all for the flat balance.
    test = tmp_path / "runway.test.yml"
    test.write_text(RUNWAY_TEST.format(runway=runway.replace("'", "''")), encoding="utf-8")
    result = subprocess.run(
        [program, "test", "rules", str(test)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
