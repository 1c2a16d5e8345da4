"""The package's import graph: no cycles (lazy imports inside functions count), and the layers
the architecture names do not reach upwards."""

import ast
from pathlib import Path

import dysonbm

ROOT = Path(dysonbm.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree):
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never imported)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
                continue
            todo.append(child)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the submodule when there is one
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                # the package root re-exports everything: importing it from inside would be a cycle
                if t in modules and t != name and not name.startswith(t + "."):
                    deps.add(t)
        graph[name] = deps
    return graph


def _cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_import_cycles():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_nothing_imports_the_package_root():
    graph = _graph()
    assert not [n for n, deps in graph.items() if "dysonbm" in deps and n != "dysonbm"]


def _reaches(graph, start, target_prefix) -> bool:
    seen, todo = set(), [start]
    while todo:
        n = todo.pop()
        for m in graph[n]:
            if m == target_prefix or m.startswith(target_prefix + "."):
                return True
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return False


def test_layers_do_not_reach_upwards():
    graph = _graph()
    # the engine knows no TOML and no names of models; models and SDEs know no runner, engine or files
    for low, high in [("dysonbm.engine", "dysonbm.config"), ("dysonbm.engine", "dysonbm.registry"),
                      ("dysonbm.sgd", "dysonbm.engine"), ("dysonbm.models", "dysonbm.engine"),
                      ("dysonbm.data", "dysonbm.engine"), ("dysonbm.data", "dysonbm.config"),
                      ("dysonbm.models", "dysonbm.io"), ("dysonbm.sde", "dysonbm.engine"),
                      ("dysonbm.models", "dysonbm.config"), ("dysonbm.sde", "dysonbm.config"),
                      ("dysonbm.io", "dysonbm.runner"), ("dysonbm.plots", "dysonbm.runner"),
                      ("dysonbm.analysis.rmt", "dysonbm.engine")]:
        assert not _reaches(graph, low, high), f"{low} imports {high}"
    # analysis reads the results store (and the model it rebuilds), never the runner or engine
    for low in [n for n in graph if n.startswith("dysonbm.analysis")]:
        for high in ("dysonbm.engine", "dysonbm.runner"):
            assert not _reaches(graph, low, high), f"{low} imports {high}"
    # config meets the models only through the registry
    assert not any(d.startswith("dysonbm.models") or d.startswith("dysonbm.sde") for d in graph["dysonbm.config"])
