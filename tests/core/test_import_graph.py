"""edgekit's own modules import one another without cycles at module level: a cycle makes which module can be
imported first depend on the order (a half-initialised module in the middle), and makes a module impossible to
understand without the ones that import it."""
from __future__ import annotations

import ast
from pathlib import Path

import edgekit

ROOT = Path(edgekit.__file__).resolve().parent


def _module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["edgekit", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(body: list[ast.stmt]):
    """Imports that run when the module is imported: not inside functions or classes, nor under TYPE_CHECKING."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _top_level_imports(node.body)
            yield from _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _top_level_imports(block)
        elif isinstance(node, ast.With):
            yield from _top_level_imports(node.body)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    """The edgekit modules an import statement names. `from pkg import sub` names the submodule, not `pkg`: that
    the package's __init__ runs first is how every submodule import works, not a dependency of this module's."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
    names_attributes = len(subs) < len(node.names)
    return subs | ({base} if names_attributes and base in known else set())


def import_graph() -> dict[str, set[str]]:
    known = _module_names()
    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        for node in _top_level_imports(tree.body):
            edges |= _targets(node, module, path.name == "__init__.py", known)
        graph[module] = edges - {module}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components, iteratively (no recursion limit to meet on a deep chain)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start, imported in graph.items():
        if start in index:
            continue
        work = [(start, iter(sorted(imported)))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(sorted(component))
    return found


def test_edgekit_has_no_import_cycles():
    graph = import_graph()
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    detail = "\n".join(" <-> ".join(c) + "\n    " + "\n    ".join(
        f"{m} imports {', '.join(sorted(graph[m] & set(c)))}" for m in c) for c in cycles)
    assert not cycles, f"import cycles among edgekit's modules:\n{detail}"


def test_the_check_sees_a_cycle():
    """The finder itself: a three-module ring is one component, a chain beside it none."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert sorted(c for c in strongly_connected(graph) if len(c) > 1) == [["a", "b", "c"]]
    real = import_graph()["edgekit.profiling.harness"]
    assert "edgekit.profiling.runner_select" in real         # a module-level import
    assert "edgekit.profiling.settings" not in real          # imported only under TYPE_CHECKING
    assert "edgekit.profiling.runner" not in real            # imported only inside run_local
