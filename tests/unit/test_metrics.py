"""``[metrics]``: Prometheus metrics and ``/healthz`` from a running ``syncd run``, scraped
over HTTP and parsed with prometheus_client's own parser."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.config import parse_config
from syncd.errors import ConfigError
from tests.conftest import TOKEN

DOCS = Path(__file__).parents[2] / "docs"
DASHBOARD = DOCS / "grafana" / "syncd.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# What a system test substitutes for the dashboard's template variables to evaluate its
# queries against a real Prometheus: every provider and instance, and intervals a
# Prometheus scraping every 30 s answers.
TEMPLATE_VALUES = {
    "provider": ".*", "instance": ".*",
    "__rate_interval": "5m", "__interval": "1m", "__interval_ms": "60000",
    "__range": "1h", "__range_s": "3600", "__range_ms": "3600000",
}  # fmt: skip
TEMPLATE_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")

# The families an operator cannot do without (contract names, as docs/monitoring.md's
# tables write them).
ESSENTIAL = {
    "syncd_orders", "syncd_balance", "syncd_job_last_success_timestamp_seconds",
    "syncd_job_failures_total", "syncd_provider_requests_total",
    "syncd_provider_request_duration_seconds", "syncd_lease_held", "syncd_webhook_backlog",
    "syncd_provider_up", "syncd_build_info", "syncd_database_up",
}  # fmt: skip


def family(name: str) -> str:
    """The name prometheus_client's parser gives a sample's family: no _total, _bucket,
    _count or _sum."""
    return re.sub(r"_(total|bucket|count|sum)$", "", name)


def contract(document: Path = DOCS / "monitoring.md") -> dict[str, tuple[bool, set[str]]]:
    """The syncd_* metrics docs/monitoring.md's tables name: whether the database holds it
    (one instance exports each series) rather than each instance exporting its own, and its
    labels."""
    metrics: dict[str, tuple[bool, set[str]]] = {}
    heading = ""
    for line in document.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line
        row = re.match(r"\| `(syncd_\w+)` \|[^|]*\|([^|]*)\|", line)
        if row:
            labels = set(re.findall(r"`(\w+)`", row[2]))
            metrics[row[1]] = ("database" in heading, labels)
    return metrics


def occasional_metrics(document: Path = DOCS / "monitoring.md") -> set[str]:
    """The families (parser's names) docs/monitoring.md says exist only at times: absent
    until something first happens, or present only while something lasts. A scrape of a
    healthy daemon lacks them, however complete its metrics."""
    rows = re.findall(r"^\| `(syncd_\w+)` \|(.*)$", document.read_text(encoding="utf-8"), re.M)
    return {family(m) for m, rest in rows if re.search(r"Absent until|present (only )?while", rest)}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(within: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, also those inside a collapsed row."""
    for panel in within.get("panels", []):
        yield panel
        yield from panels(panel)


def targets() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of the dashboard."""
    for panel in panels(dashboard()):
        for target in panel.get("targets", []):
            yield panel, target


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


def dashboard_metrics() -> set[str]:
    """The metric families the Grafana dashboard's queries and variables use (the parser's
    names: no _total, _bucket, _count or _sum). Some exist only at times (a task failing,
    a backlog waiting, a provider that answered once)."""
    exprs = [t["expr"] for _, t in targets()]
    exprs += [v["query"] for v in variables().values() if v["type"] == "query"]
    return {family(m) for e in exprs for m in re.findall(r"\bsyncd_\w+", e)}


def dashboard_queries() -> list[str]:
    """Every query of the dashboard with its template variables replaced by concrete values,
    so that a Prometheus can evaluate it; a variable without a value here raises KeyError."""

    def value(match: re.Match[str]) -> str:
        return TEMPLATE_VALUES[next(name for name in match.groups() if name)]

    return [TEMPLATE_VARIABLE.sub(value, target["expr"]) for _, target in targets()]


def job_label_uses(query: str) -> list[str]:
    """Where a query names the `job` label: a matcher, a grouping or a legend. syncd's job is
    `task`; `job` is Prometheus' scrape job."""
    matchers = re.findall(r"\bjob\s*(?:=~|!~|!=|=)", query)
    grouping = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"
    groupings = [g for g in re.findall(grouping, query) if "job" in re.split(r"[\s,]+", g)]
    return matchers + groupings + re.findall(r"\{\{\s*job\s*\}\}", query)


def test_the_dashboard_imports_as_it_is_with_a_data_source_variable() -> None:
    text = DASHBOARD.read_text(encoding="utf-8")
    loaded = dashboard()
    # Neither file provisioning nor POST /api/dashboards/db fills in an import input.
    assert "__inputs" not in loaded
    assert "${DS_" not in text
    ids = [p["id"] for p in panels(loaded)]
    assert len(set(ids)) == len(ids)
    found = variables()
    assert (found["datasource"]["type"], found["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    for name, metric in [("provider", "syncd_lease_held"), ("instance", "syncd_build_info")]:
        variable = found[name]
        assert variable["query"] == f"label_values({metric}, {name})"
        assert variable["multi"] and variable["includeAll"]
        assert variable["datasource"] == DATASOURCE
    queried = [(p, t) for p, t in targets()]
    assert len(queried) > 20
    for panel, target in queried:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert target["datasource"] == DATASOURCE, panel["title"]


def test_no_query_or_legend_names_the_job_label() -> None:
    for panel, target in targets():
        used = job_label_uses(target["expr"] + " " + target.get("legendFormat", ""))
        assert not used, (panel["title"], used)


@pytest.mark.parametrize(
    "query",
    ['sum by (job) (up)', 'x{job="syncd"}', 'x{provider="a", job=~"s.*"}',
     "max without (provider, job) (x)", "a and on (instance,job) b", "{{ job }}"],
)  # fmt: skip
def test_a_job_label_anywhere_is_found(query: str) -> None:
    assert job_label_uses(query)


def test_tables_query_the_current_value_only() -> None:
    tables = [(p, t) for p, t in targets() if p["type"] == "table"]
    assert len({p["id"] for p, _ in tables}) >= 4
    for panel, target in tables:
        assert (target.get("instant"), target.get("format")) == (True, "table"), panel["title"]


def test_the_runway_shows_nothing_while_the_balance_does_not_fall() -> None:
    (runway,) = [t["expr"] for p, t in targets() if "runway" in p["title"].lower()]
    # A rate of spending that is not above 0 is dropped, not divided by: no series.
    assert re.search(r"/\s*\(\s*-\s*deriv\(.*\[6h:\w+\]\)\s*>\s*0\s*\)", runway), runway
    assert "clamp_min" not in runway
    assert "max by (provider, currency) (syncd_balance" in runway


def test_the_dashboard_uses_only_documented_metrics_and_every_essential_one() -> None:
    documented = contract()
    assert len([m for m, (held, _) in documented.items() if held]) >= 8  # both tables read
    assert len([m for m, (held, _) in documented.items() if not held]) >= 6
    assert occasional_metrics() >= {
        "syncd_job_failing_since_timestamp_seconds", "syncd_job_last_success_timestamp_seconds",
        "syncd_webhook_oldest_undelivered_timestamp_seconds",
    }  # fmt: skip
    assert occasional_metrics() < {family(m) for m in documented}
    used = dashboard_metrics()
    assert used <= {family(m) for m in documented}, used - {family(m) for m in documented}
    assert used >= {family(m) for m in ESSENTIAL}, {family(m) for m in ESSENTIAL} - used


def test_every_query_follows_the_selectors_and_counts_database_series_once() -> None:
    """A metric with a provider label is filtered by `$provider`; one each instance exports
    by `$instance` (unless its panel says it shows every instance); one the database holds
    is exported by a single instance, so it is never filtered by instance but aggregated
    over instances, which also bridges the scrape where two holders overlap."""
    documented = contract()
    for panel, target in targets():
        expr = target["expr"]
        for selector in re.finditer(r"\b((?:syncd|process)_\w+)\s*(\{[^}]*\})?", expr):
            metric, matchers = selector[1], selector[2] or ""
            held, labels = next(
                (spec for name, spec in documented.items() if family(name) == family(metric)),
                (False, set()),
            )
            where = (panel["title"], expr)
            if "provider" in labels:
                assert 'provider=~"$provider"' in matchers, where
            if held:
                assert "instance" not in matchers, where
                aggregated = re.search(
                    r"\b(?:sum|max|min) by \(([^)]*)\)\s*\(\s*$", expr[: selector.start()]
                )
                assert aggregated and "instance" not in aggregated[1], where
            elif "every instance" not in panel["description"]:
                assert 'instance=~"$instance"' in matchers, where


def test_every_query_gets_concrete_values_for_its_variables() -> None:
    queries = dashboard_queries()
    assert len(queries) == len(list(targets()))
    for query in queries:
        assert "$" not in query and "[[" not in query, query


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
