"""The Prometheus alert rules (docs/prometheus/alerts.yml): promtool accepts them and
passes their unit tests, and each rule is complete and keeps to the metric contract of
docs/monitoring.md."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

DOCS = Path(__file__).resolve().parents[2] / "docs"
RULES = DOCS / "prometheus" / "alerts.yml"
RULE_TESTS = DOCS / "prometheus" / "alerts.test.yml"

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian's prometheus package brings it)",
)

# PromQL's own words that stand where a metric name could, and never are one.
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset"}


def load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), path
    return loaded


def alerting_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def rule_id(rule: dict[str, Any]) -> str:
    return f"{rule['alert']}-{rule['labels']['severity']}"


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: what is left once strings, label matchers,
    ranges and label lists are taken out, and function names and operators skipped."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = re.findall(r"(?<![\w:.])[a-zA-Z_:][\w:]*\b(?!\s*\()", expr)
    return set(names) - PROMQL_WORDS


def documented_metrics() -> set[str]:
    """The names in the first column of docs/monitoring.md's metric tables."""
    names: set[str] = set()
    for line in (DOCS / "monitoring.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([\w*]+)`", line.split("|")[1]))
    return names


def is_documented(name: str, documented: set[str]) -> bool:
    # A histogram is documented by its family name; Prometheus adds the series' suffixes.
    family = re.sub(r"_(?:bucket|count|sum)$", "", name)
    return any(fnmatch.fnmatchcase(n, pattern) for n in (name, family) for pattern in documented)


def anchors(markdown: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub makes them."""
    found = set()
    for line in markdown.read_text(encoding="utf-8").splitlines():
        if heading := re.match(r"#+\s+(.*)", line):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(slug.replace(" ", "-"))
    return found


# -- promtool ------------------------------------------------------------------------


@needs_promtool
def test_promtool_accepts_every_rule_in_the_file() -> None:
    done = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerting_rules())} rules found" in done.stdout, done.stdout


@needs_promtool
def test_the_rules_pass_their_promtool_unit_tests() -> None:
    done = subprocess.run(
        ["promtool", "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout


# -- each rule, read from the YAML ---------------------------------------------------


def test_the_file_holds_one_group_of_alerting_rules_only() -> None:
    groups = load(RULES)["groups"]
    assert [group["name"] for group in groups] == ["syncd"]
    assert alerting_rules() and all("alert" in rule for rule in alerting_rules())


@pytest.mark.parametrize("rule", alerting_rules(), ids=rule_id)
def test_every_rule_has_a_severity_and_its_annotations(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    page, _, anchor = annotations["runbook_url"].partition("#")
    assert page == "docs/runbook.md"
    assert anchor == rule["alert"].lower()
    assert anchor in anchors(DOCS / "runbook.md"), f"no heading for #{anchor} in runbook.md"


@pytest.mark.parametrize("rule", alerting_rules(), ids=rule_id)
def test_no_rule_selects_on_the_job_label_but_the_scrape_job_itself(rule: dict[str, Any]) -> None:
    # syncd's jobs are labelled `task`; `job` is Prometheus' scrape job, whose name is the
    # user's to choose, so only SyncdDown names it.
    expr = rule["expr"].replace('up{job="syncd"}', "up")
    assert not re.search(r"\bjob\s*(?:=|!=|=~|!~)", expr), expr


@pytest.mark.parametrize("rule", alerting_rules(), ids=rule_id)
def test_every_metric_a_rule_reads_is_in_the_metric_contract(rule: dict[str, Any]) -> None:
    documented = documented_metrics()
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    # `up` is Prometheus' own series for each target, named in docs/monitoring.md's text.
    undocumented = {n for n in names - {"up"} if not is_documented(n, documented)}
    assert not undocumented, f"not in docs/monitoring.md's tables: {sorted(undocumented)}"


def test_the_metric_names_are_read_from_expressions_and_tables() -> None:
    expr = (
        'time() - max by (provider, task) (last_over_time(syncd_x{task!="a b"}[2m])) '
        "> clamp_min(5 * max by (provider) (syncd_y_seconds_count), 1e-9) unless on (p) up"
    )
    assert metric_names(expr) == {"syncd_x", "syncd_y_seconds_count", "up"}
    documented = documented_metrics()
    assert {"syncd_orders", "syncd_job_failures_total", "process_*"} <= documented
    assert is_documented("syncd_job_duration_seconds_count", documented)
    assert is_documented("process_resident_memory_bytes", documented)
    assert not is_documented("syncd_order_count", documented)


def test_every_rule_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for group in load(RULE_TESTS)["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert not names - firing, f"never tested firing: {sorted(names - firing)}"
    assert not names - silent, f"never tested silent: {sorted(names - silent)}"


def test_both_severities_of_a_failing_job_are_tested() -> None:
    severities = {
        alert["exp_labels"]["severity"]
        for group in load(RULE_TESTS)["tests"]
        for case in group.get("alert_rule_test", [])
        if case["alertname"] == "SyncdJobFailing"
        for alert in case.get("exp_alerts") or []
    }
    rules = [rule for rule in alerting_rules() if rule["alert"] == "SyncdJobFailing"]
    assert severities == {rule["labels"]["severity"] for rule in rules} == {"critical", "warning"}
