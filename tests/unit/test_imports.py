"""The package's import graph: no cycles (module- or function-level), and layers that hold."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_provider_qwen"
ROOT = "airflow_provider_qwen"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str) -> set[str]:
    """The package modules ``name`` imports, anywhere in its body, ``TYPE_CHECKING`` blocks aside."""
    tree = ast.parse(MODULES[name].read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith(ROOT):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    found.discard(name)
    return {module for module in found if module in MODULES}


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_the_graph_sees_function_level_imports():
    assert "airflow_provider_qwen.calls" in GRAPH["airflow_provider_qwen.operators.base"]


def _airflow_imports(name: str) -> list[str]:
    tree = ast.parse(MODULES[name].read_text())
    return [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and any(
            n == "airflow" or n.startswith("airflow.")
            for n in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
        )
    ]


def test_the_client_the_cost_package_the_agent_and_calls_import_no_airflow():
    prefixes = (f"{ROOT}.client", f"{ROOT}.cost", f"{ROOT}.agent")
    layers = [m for m in MODULES if m.startswith(prefixes) or m == f"{ROOT}.calls"]
    assert len(layers) > 15
    assert {m: _airflow_imports(m) for m in layers if _airflow_imports(m)} == {}


def test_the_emulator_does_its_own_arithmetic():
    money = {f"{ROOT}.client.pricing", f"{ROOT}.client.tokens"} | {
        m for m in MODULES if m.startswith(f"{ROOT}.cost")
    }
    testing = [m for m in MODULES if m.startswith(f"{ROOT}.testing")]
    assert {m: sorted(GRAPH[m] & money) for m in testing if GRAPH[m] & money} == {}
