"""``[metrics]``: Prometheus metrics and ``/healthz`` from a running ``syncd run``, scraped
over HTTP and parsed with prometheus_client's own parser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from syncd.config import parse_config
from syncd.errors import ConfigError
from tests.conftest import TOKEN

FAMILIES = {
    "syncd_job_duration_seconds",
    "syncd_job_last_success_timestamp_seconds",
    "syncd_job_failures",
    "syncd_provider_requests",
    "syncd_provider_request_duration_seconds",
    "syncd_orders",
    "syncd_balance",
    "syncd_webhook_backlog",
    "syncd_lease_held",
}  # fmt: skip  (the parser names a counter without its _total)


DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "syncd.json"


def dashboard_metrics() -> set[str]:
    """The metric families the Grafana dashboard's queries use (the parser's names: no
    _total, _bucket, _count or _sum)."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {m for e in exprs for m in re.findall(r"\bsyncd_[a-z_]+", e)}
    return {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in names}


def test_the_dashboard_is_importable_json_showing_every_family() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    assert dashboard_metrics() == FAMILIES


@pytest.mark.parametrize(
    ("listen", "public", "problem"),
    [
        ('"0.0.0.0:9464"', "false", "not a loopback address"),
        ('"10.1.2.3:9464"', "false", "not a loopback address"),
        ('"127.0.0.1"', "false", "not host:port"),
        ('"127.0.0.1:99999"', "false", "port must be"),
        ("9464", "false", "must be"),
    ],
)
def test_metrics_listen_is_checked(listen: str, public: str, problem: str) -> None:
    raw = {
        "providers": [{"name": "p", "url": "https://x.example/api/v2", "token": TOKEN}],
        "metrics": {"listen": eval(listen), "public": public == "true"},
    }
    with pytest.raises(ConfigError, match=problem):
        parse_config(raw, source="t", environ={})


def test_a_public_address_must_be_asked_for() -> None:
    raw = {
        "providers": [{"name": "p", "url": "https://x.example/api/v2", "token": TOKEN}],
        "metrics": {"listen": "0.0.0.0:9464", "public": True},
    }
    assert parse_config(raw, source="t", environ={}).metrics.listen == ("0.0.0.0", 9464)
