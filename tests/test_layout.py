"""The package's architecture as rules on its imports (docs/architecture.md).

Every import is counted, function-level ones included: a cycle hidden inside a function still
means two modules cannot be understood (or loaded) one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lib" / "gridpersona"

# Layer -> the layers it may import (besides itself). Foundation modules are `console`, `guardjar`
# (the SQL guard's jar, loaded by every session) and `session`; contracts are the bottom: they
# describe tables and import nothing of ours.
ALLOWED = {
    "contracts": set(),
    "console": set(),
    "guardjar": set(),
    "config": {"contracts"},
    "lake": {"config", "console", "contracts", "session"},
    "session": {"config", "guardjar"},
    "transform": {"contracts", "config"},
    "segment": {"contracts", "transform"},
    "stages": {"contracts", "config", "lake", "console", "session", "transform", "segment"},
    "analyst": {"contracts", "config", "lake", "console", "session", "guardjar", "stages"},
    "synthetic": {"contracts", "config", "lake", "console", "transform", "stages"},
    "app": {"contracts", "config", "lake", "console", "session", "guardjar", "transform", "segment", "stages",
            "analyst", "synthetic"},
}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` (module ``name``) imports, anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "gridpersona"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "gridpersona":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def import_graph(package: Path) -> dict[str, set[str]]:
    files = sorted(package.rglob("*.py"))
    modules = {module_name(p, package) for p in files}
    return {module_name(p, package): package_imports(p, module_name(p, package), modules) for p in files}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (or a self-import) are cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "gridpersona"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from gridpersona.b import x\nfrom . import c\n")
    (pkg / "c.py").write_text("")
    (pkg / "b.py").write_text("def x():\n    from gridpersona import a\n    return a\n")
    g = import_graph(pkg)
    assert g["gridpersona.b"] == {"gridpersona.a"}
    assert strongly_connected(g) == [["gridpersona.a", "gridpersona.b"]]


def test_no_import_cycle_among_the_package_modules(graph):
    assert strongly_connected(graph) == []


def test_every_module_belongs_to_a_known_layer(graph):
    unknown = sorted(m for m in graph if layer(m) not in ALLOWED and m != "gridpersona")
    assert unknown == [], f"modules outside the layers of docs/architecture.md: {unknown}"


def test_imports_point_down_the_layers(graph):
    wrong = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                   if layer(m) in ALLOWED and layer(d) not in ALLOWED[layer(m)] | {layer(m), None})
    assert wrong == [], "imports against the layer order:\n" + "\n".join(wrong)
