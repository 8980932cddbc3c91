"""The README and docs/ describe the repository as it is: the layout section names exactly
the parts of the package, every relative link leads to a file that exists, and the layer
rules docs/architecture.md states hold in the code."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "syncd"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[\w.]+/?)(?: +\S.*)?$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def layout_block(readme: str) -> str:
    """The code block of the README's "Layout" section."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```\n", 2)[1]


def layout_entries(block: str) -> list[str]:
    """The paths the layout names, relative to the repository root (``syncd/jobs/``,
    ``syncd/jobs/runner.py``). Each line is one name, indented two spaces per level under
    its folder, then what it holds; a line that names no module or folder is an error,
    so a description cannot spill onto a line of its own."""
    lines = block.splitlines()
    assert lines[0] == "syncd/", f"the layout starts with the package folder, not {lines[0]!r}"
    parents = ["syncd/"]
    paths = []
    for line in lines[1:]:
        match = ENTRY.match(line)
        assert match, f"layout line names no module or folder: {line!r}"
        depth, odd = divmod(len(match["indent"]), 2)
        name = match["name"]
        assert not odd and 1 <= depth <= len(parents), f"layout line badly indented: {line!r}"
        assert name.endswith(("/", ".py")), f"layout line names no module or folder: {line!r}"
        del parents[depth:]
        path = "".join(parents) + name
        paths.append(path)
        if name.endswith("/"):
            parents.append(name)
    return paths


def subpackages(package: Path) -> set[str]:
    return {
        str(init.parent.relative_to(package.parent)) + "/"
        for init in package.rglob("__init__.py")
        if init.parent != package
    }


def top_level_modules(package: Path) -> set[str]:
    return {str(module.relative_to(package.parent)) for module in package.glob("*.py")}


def layout_problems(paths: list[str], root: Path, package: Path) -> list[str]:
    problems = [f"{p} does not exist" for p in paths if not (root / p).exists()]
    problems += [f"{p} is named twice" for p in sorted({p for p in paths if paths.count(p) > 1})]
    listed = set(paths)
    missing = (subpackages(package) | top_level_modules(package)) - listed
    problems += [f"{p} is missing from the layout" for p in sorted(missing)]
    return problems


def broken_links(document: Path) -> list[str]:
    """Relative links (and their #anchors) of a Markdown file that lead nowhere."""
    text = document.read_text(encoding="utf-8")
    problems = []
    for match in LINK.finditer(FENCE.sub("", text)):
        target = match["target"]
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not this repository's
            continue
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        if not file.exists():
            problems.append(f"{document.name}: {target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{document.name}: {target}: no such heading")
    return problems


def anchors(document: Path) -> set[str]:
    """The anchors a Markdown renderer gives the headings: lower case, punctuation
    dropped, spaces as hyphens."""
    text = FENCE.sub("", document.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+ +(.+?) *$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_the_layout_names_every_subpackage_and_module_of_the_package_and_nothing_else() -> None:
    paths = layout_entries(layout_block((ROOT / "README.md").read_text(encoding="utf-8")))
    assert "syncd/storage/" in paths
    assert layout_problems(paths, ROOT, PACKAGE) == []


def test_a_layout_naming_a_module_that_is_gone_or_missing_a_subpackage_fails(
    tmp_path: Path,
) -> None:
    package = tmp_path / "syncd"
    for folder in ("", "jobs", "storage", "storage/migrations"):
        (package / folder).mkdir(exist_ok=True)
        (package / folder / "__init__.py").write_text("")
    (package / "config.py").write_text("")
    block = (
        "syncd/\n"
        "  __init__.py  the version\n"
        "  jobs/        one module per job\n"
        "    runner.py  the table of jobs\n"
        "  storage/     the SQL\n"
        "  config.py    the config file\n"
    )
    problems = layout_problems(layout_entries(block), tmp_path, package)
    assert problems == [
        "syncd/jobs/runner.py does not exist",
        "syncd/storage/migrations/ is missing from the layout",
    ]


@pytest.mark.parametrize(
    "line",
    ["    that spilled onto a line of its own", "   cli/  odd indent", "  README  no .py"],
)
def test_a_layout_line_that_names_nothing_is_refused(line: str) -> None:
    with pytest.raises(AssertionError):
        layout_entries(f"syncd/\n  cli/  commands\n{line}\n")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: d.name)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(document: Path) -> None:
    assert broken_links(document) == []


def test_the_documents_link_to_one_another() -> None:
    linked = {
        (d.parent / m["target"].partition("#")[0]).resolve()
        for d in DOCUMENTS
        for m in LINK.finditer(d.read_text(encoding="utf-8"))
        if not re.match(r"[a-z]+:", m["target"]) and m["target"].partition("#")[0]
    }
    unreached = [d.name for d in DOCUMENTS[1:] if d not in linked]
    assert unreached == [], "documents nothing links to"


def test_a_link_to_a_missing_file_or_heading_is_reported(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# Title\n\n## Two words\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#two-words) [web](https://example.com/x)\n"
        "[gone](gone.md) [bad](there.md#three-words)\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    assert broken_links(page) == [
        "page.md: gone.md: no such file",
        "page.md: there.md#three-words: no such heading",
    ]


# -- the layer rules docs/architecture.md states ------------------------------------------

DATABASE_LIBRARIES = {"sqlalchemy", "sqlmodel", "alembic", "sqlite3", "psycopg"}
DECISIONS = ("syncd/lifecycle.py", "syncd/order_requests.py", "syncd/plans.py")


def imports(module: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def importers(predicate: Callable[[str], bool]) -> set[str]:
    """The files of the package that import a module the predicate picks."""
    return {
        str(module.relative_to(ROOT))
        for module in PACKAGE.rglob("*.py")
        if any(predicate(name) for name in imports(module))
    }


def under(*prefixes: str) -> Callable[[str], bool]:
    return lambda path: path.startswith(prefixes)


def test_only_storage_talks_to_the_database() -> None:
    users = importers(lambda name: name.split(".")[0] in DATABASE_LIBRARIES)
    assert "syncd/storage/engine.py" in users
    assert {u for u in users if not u.startswith("syncd/storage/")} == set()


def test_storage_knows_no_http() -> None:
    storage_http = importers(under("httpx", "syncd.provider", "syncd.webhooks"))
    assert {u for u in storage_http if u.startswith("syncd/storage/")} == set()
    http = importers(lambda name: name.split(".")[0] == "httpx")
    assert "syncd/provider/client.py" in http
    assert {u for u in http if not u.startswith(("syncd/provider/", "syncd/webhooks/"))} == set()


def test_decisions_touch_neither_database_network_nor_clock() -> None:
    outside = importers(
        under("syncd.storage", "syncd.provider", "syncd.webhooks", "syncd.clock", "httpx")
    )
    assert outside.intersection(DECISIONS) == set()
    assert all((ROOT / d).exists() for d in DECISIONS)


def test_jobs_know_no_terminal() -> None:
    terminal = importers(under("syncd.cli", "argparse"))
    assert {t for t in terminal if t.startswith("syncd/jobs/")} == set()
    printing = [
        str(module.relative_to(ROOT))
        for module in (PACKAGE / "jobs").rglob("*.py")
        if re.search(r"\bprint\(|\bsys\.(stdout|stderr|exit)\b", module.read_text("utf-8"))
    ]
    assert printing == []
