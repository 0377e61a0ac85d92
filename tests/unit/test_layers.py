"""The import structure docs/ARCHITECTURE.md promises: no import circle, pure layers that stay
pure, and a vocabulary that imports nothing of trailguard.  Read from the source (every import,
``if TYPE_CHECKING`` ones included), so that a new import that breaks a layer fails here."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "daemon" / "trailguard"


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = modules()


@functools.cache
def imports(path: Path) -> tuple[str, ...]:
    return tuple(_imports(path))


def _imports(path: Path) -> Iterator[str]:
    """Every module name ``path`` imports (its own package's submodules resolved)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name


@functools.cache
def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = {t for t in imports(path) if t in MODULES}
        for target in list(targets):  # importing a submodule runs its packages' __init__
            parts = target.split(".")
            for k in range(1, len(parts)):
                package = ".".join(parts[:k])
                if package in MODULES and not name.startswith(package):
                    targets.add(package)
        edges[name] = targets - {name}
    return edges


def test_no_import_circle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def reaches(start: str) -> set[str]:
    """Every trailguard module ``start`` imports, directly or not."""
    edges = graph()
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("module", ["trailguard.vocabulary"])
def test_the_vocabulary_imports_nothing_of_trailguard(module: str) -> None:
    assert reaches(module) == set()


@pytest.mark.parametrize(
    "package", ["trailguard.detect", "trailguard.policy", "trailguard.rulepack"]
)
def test_the_pure_core_does_no_io_and_knows_no_aws_sdk(package: str) -> None:
    """The pure core imports no asyncio, AWS SDK or daemon machinery, however indirectly."""
    forbidden = ("asyncio", "aiobotocore", "botocore", "boto3", "sqlite3", "structlog")
    inside = [m for m in MODULES if m == package or m.startswith(package + ".")]
    for name in inside:
        for module in {name} | reaches(name):
            for imported in imports(MODULES[module]):
                assert not imported.startswith(forbidden), f"{module} imports {imported}"
            assert not module.startswith(
                ("trailguard.ingest", "trailguard.remediate", "trailguard.app")
            ), f"{name} reaches {module}"
