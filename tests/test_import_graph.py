"""The package's import graph: no cycles, imports flow downward (kernels never import the model above the
attention math, library code never imports recipes or the CLI), leaf modules stay leaves; every module imports.

Every ``import`` counts, inside functions too (a lazy import is still a dependency); imports under
``if TYPE_CHECKING:`` do not (they never run)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mdeberta"


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (a name resolves to the longest module prefix; a module's own
    parent packages are not edges: importing a submodule runs them anyway)."""
    files = module_files()

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _type_checking_nodes(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                target = resolve(name) if name.startswith("mdeberta") else None
                if target and target != module and not module.startswith(target + "."):
                    targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycles():
    assert cycles(import_graph()) == []


def test_cycle_detection_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_flow_downward():
    graph = import_graph()
    top = ("mdeberta.recipes", "mdeberta.cli", "mdeberta.commands", "mdeberta.__main__")
    upward = [f"{m} -> {t}" for m, ts in graph.items() for t in ts if t.startswith(top) and not m.startswith(top)]
    assert upward == [], "library code imports a recipe or the CLI"
    kernels = [f"{m} -> {t}" for m, ts in graph.items() if m.startswith("mdeberta.kernels") for t in ts
               if t.startswith(("mdeberta.model", "mdeberta.train", "mdeberta.tasks", "mdeberta.data"))
               and t != "mdeberta.model.attention"]
    assert kernels == [], "kernels import the model (only the attention math, model/attention.py, is below them)"
    leaves = {"mdeberta.errors": set(), "mdeberta.outputs": {"mdeberta.errors"},
              "mdeberta.files": {"mdeberta.errors", "mdeberta.outputs"}, "mdeberta.hub": {"mdeberta.errors"},
              "mdeberta.config": {"mdeberta.errors", "mdeberta.files", "mdeberta.hub"},
              "mdeberta.model.attention": {"mdeberta.config", "mdeberta.errors"},
              "mdeberta.arguments": {"mdeberta.errors"}}
    for module, allowed in leaves.items():
        assert graph[module] <= allowed, f"{module} imports {sorted(graph[module] - allowed)}"
    lower = ("mdeberta.model", "mdeberta.kernels", "mdeberta.config", "mdeberta.data", "mdeberta.tokenizer")
    higher = ("mdeberta.train", "mdeberta.tasks", "mdeberta.inference", "mdeberta.serving", "mdeberta.onnx_model")
    assert [f"{m} -> {t}" for m, ts in graph.items() if m.startswith(lower) for t in ts if t.startswith(higher)] == []


@pytest.mark.parametrize("module", sorted(m for m in module_files() if m != "mdeberta.__main__"))
def test_every_module_imports(module):
    if module == "mdeberta.kernels._triton_kernels":
        pytest.importorskip("triton", reason="the Triton kernels need triton")
    importlib.import_module(module)
