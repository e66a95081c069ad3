"""The layers, read from the source: tools on top; backend, dashboard and connectors side by side; the
shared kernel (`switchboard`) at the bottom. No import runs back up and no two packages import each other,
directly or round a circle. Every import counts, those inside functions and under TYPE_CHECKING too."""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "switchboard"
PROCESSES = ("backend", "dashboard", "connectors")
TOOLS = "tools"
PACKAGES = (KERNEL, *PROCESSES, TOOLS)


class Import:
    def __init__(self, path: Path, line: int, module: str) -> None:
        self.path, self.line, self.module = path, line, module
        self.importer = path.relative_to(ROOT).parts[0]
        self.imported = module.split(".")[0]

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.module}"


@cache
def imports_between_packages() -> tuple[Import, ...]:
    """Every import from one of our packages of another of them."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]  # a relative import stays inside its own package
                else:
                    continue
                found += [i for m in modules if (i := Import(path, node.lineno, m)).imported in PACKAGES
                          and i.imported != i.importer]
    return tuple(found)


def offending(importers: tuple[str, ...], imported: tuple[str, ...]) -> list[str]:
    return [str(i) for i in imports_between_packages() if i.importer in importers and i.imported in imported]


def test_the_scan_sees_the_imports_that_are_allowed():
    """Guards the tests below against passing on a scan that found nothing."""
    edges = {(i.importer, i.imported) for i in imports_between_packages()}
    assert {(TOOLS, "backend"), (TOOLS, "dashboard"), (TOOLS, "connectors"), (TOOLS, KERNEL)} <= edges
    assert {(process, KERNEL) for process in PROCESSES} <= edges


def test_the_kernel_imports_nothing_above_it():
    assert offending((KERNEL,), (*PROCESSES, TOOLS)) == []


def test_backend_dashboard_and_connectors_import_no_tool():
    assert offending(PROCESSES, (TOOLS,)) == []


def test_the_dashboard_reaches_the_backend_over_http_only():
    assert offending(("dashboard",), ("backend",)) == []


def test_no_import_circle_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    for i in imports_between_packages():
        graph[i.importer].add(i.imported)
    circles = []

    def walk(package: str, path: list[str]) -> None:
        for following in sorted(graph[package]):
            if following in path:
                circles.append(" → ".join([*path[path.index(following):], following]))
            else:
                walk(following, [*path, following])

    for package in PACKAGES:
        walk(package, [package])
    assert circles == []
