"""fsm/ has no import cycles: each module imports first on its own, and the graph is acyclic."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fsm

ROOT = Path(fsm.__file__).parent
MODULES = {
    ".".join(("fsm", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__"): path
    for path in sorted(ROOT.rglob("*.py"))
}
"""Every module of the package by dotted name (a package by its own name)."""

FIRST_IMPORT = """
import importlib, sys, types
name, root = sys.argv[1], sys.argv[2]
parts = name.split(".")
for end in range(1, len(parts)):  # empty parents: the module under test is imported first
    package = ".".join(parts[:end])
    stub = types.ModuleType(package)
    stub.__path__ = [root + "/" + "/".join(parts[1:end])]
    sys.modules[package] = stub
importlib.import_module(name)
"""


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports a module runs when it is imported: not in functions, not TYPE_CHECKING-only."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _top_level(block)
            for handler in node.handlers:
                yield from _top_level(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _top_level(node.body)


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> set[str]:
    """The fsm modules an import statement loads."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in MODULES}
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
        base = f"{parent}.{base}".rstrip(".")
    found = {base} if base in MODULES else set()
    return found | {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()


def import_graph() -> dict[str, set[str]]:
    """Module -> the fsm modules it imports at import time."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        imports = _top_level(ast.parse(path.read_text()).body)
        graph[module] = {target for node in imports for target in _targets(node, module)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph, as the modules along it (first repeated last), or []."""
    done: set[str] = set()
    stack: list[str] = []

    def visit(module: str) -> list[str]:
        if module in stack:
            return [*stack[stack.index(module) :], module]
        if module in done:
            return []
        stack.append(module)
        for target in sorted(graph[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        stack.pop()
        done.add(module)
        return []

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return []


class TestImportCycles:
    """No module of fsm/ needs another to be imported before it."""

    def test_import_graph_is_acyclic(self) -> None:
        """The modules' import-time imports (TYPE_CHECKING-only ones aside) form no cycle."""
        assert find_cycle(import_graph()) == []

    def test_no_function_local_imports_of_fsm(self) -> None:
        """No function imports an fsm module: a cycle cannot hide behind a late import."""
        offenders = [
            f"{module}:{node.lineno}"
            for module, path in MODULES.items()
            for function in ast.walk(ast.parse(path.read_text()))
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(function)
            if isinstance(node, ast.Import | ast.ImportFrom) and _targets(node, module)
        ]
        assert offenders == []

    def test_finds_a_cycle(self) -> None:
        """The check itself sees a cycle, and names the modules along it."""
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        assert find_cycle(graph) == ["a", "b", "c", "a"]
        assert find_cycle({"a": {"b"}, "b": set()}) == []

    def test_each_module_imports_first(self) -> None:
        """Each module, imported first in a fresh interpreter (its packages' __init__ not
        run), loads; the interpreters run side by side."""
        modules = sorted(set(MODULES) - {"fsm.__main__"})  # that one runs the CLI
        started = {
            module: subprocess.Popen(
                [sys.executable, "-c", FIRST_IMPORT, module, str(ROOT)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for module in modules
        }
        failed = {}
        for module, process in started.items():
            _, stderr = process.communicate(timeout=60)
            if process.returncode != 0:
                failed[module] = stderr.strip().splitlines()[-1:]
        assert failed == {}
