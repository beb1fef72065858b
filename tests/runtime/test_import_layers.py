"""The runtime's modules import one another without a cycle, counting imports made only for
type checking: a cycle means two modules share one job, which is what the split into
backend / backend_loaders / messages / dataplane / repository (and bundle/) removed."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"runtime": "qgnn.runtime", "exporter": "qgnn.exporter"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            if "proto_gen" in rel.parts:
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``path`` imports when it loads or is type-checked (imports
    inside functions run on call and are left out)."""
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                out.add(node.module)
                out.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            visit([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)])

    visit(ast.parse(path.read_text()).body)
    return out & known


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # a package's __init__ naming its own submodules is not a dependency between jobs
        graph[name] = {m for m in _imports(path, set(modules)) - {name}
                       if not m.startswith(name + ".") and not name.startswith(m + ".")}
    return graph


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_runtime_and_exporter_modules_import_without_a_cycle() -> None:
    graph = _graph()
    assert "qgnn.runtime.dataplane" in graph and "qgnn.runtime.bundle.reader" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_repository_does_not_import_the_data_plane() -> None:
    graph = _graph()
    assert "qgnn.runtime.dataplane" not in graph["qgnn.runtime.repository"]
    assert "qgnn.runtime.repository" not in graph["qgnn.runtime.backend"]


def test_bench_imports_nothing_from_tests() -> None:
    offenders = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "tests" or n.startswith("tests.") for n in names):
                offenders.append(f"{path.name}: imports {names}")
            if (isinstance(node, ast.Call) and "sys.path" in ast.unparse(node.func)
                    and "tests" in ast.unparse(node)):
                offenders.append(f"{path.name}: {ast.unparse(node)}")
    assert offenders == []
