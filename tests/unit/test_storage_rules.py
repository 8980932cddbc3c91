"""Storage reads rows, hands them to the planner a job passed in, and writes the plan: it
never decides. So no module of ``syncd.storage`` may reach a rule function of
``syncd.lifecycle`` or ``syncd.order_requests``; their types (orders, requests, plans)
and constants it may use."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import syncd.storage

RULE_MODULES = ("syncd.lifecycle", "syncd.order_requests")
STORAGE = Path(syncd.storage.__file__).parent


def rule_imports(source: str) -> list[str]:
    """The imports in ``source`` that reach a rule function: a rule module itself, or a
    name of one that is a function rather than a type or a constant."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name in RULE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in RULE_MODULES:
                    found.append(f"{node.module}.{alias.name}")
                elif node.module in RULE_MODULES:
                    value = getattr(importlib.import_module(node.module), alias.name)
                    if callable(value) and not isinstance(value, type):
                        found.append(f"{node.module}.{alias.name}")
    return found


def test_no_storage_module_imports_a_rule_function() -> None:
    reached = {
        str(path.relative_to(STORAGE)): names
        for path in sorted(STORAGE.rglob("*.py"))
        if (names := rule_imports(path.read_text(encoding="utf-8")))
    }
    assert reached == {}


def test_the_check_finds_a_rule_function_a_rule_module_and_lets_types_through() -> None:
    source = (
        "from syncd import lifecycle\n"
        "import syncd.order_requests\n"
        "from syncd.lifecycle import HELD, check_order\n"
        "from syncd.order_requests import Request, RequestState, plan_claims\n"
    )
    assert rule_imports(source) == [
        "syncd.lifecycle",
        "syncd.order_requests",
        "syncd.lifecycle.check_order",
        "syncd.order_requests.plan_claims",
    ]
