"""The package's shape: imports point one way (no cycle; no shared layer names a task, and no
task imports another), and functions stay short.

Every import counts, those inside functions too: a lazy import keeps start-up fast, but it is
still an arrow between two modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import seqgen

PACKAGE = Path(seqgen.__file__).parent
MAX_FUNCTION_LINES = 60  # docstrings aside


def _modules() -> dict[str, Path]:
    modules = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = file
    return modules


MODULES = _modules()


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The package's modules an import statement names (``from a import b`` names ``a.b``
    where ``b`` is a module, else ``a``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            is_package = MODULES[module].name == "__init__.py"
            parts = module.split(".")[: len(module.split(".")) - node.level + is_package]
            base = ".".join([*parts, *([base] if base else [])])
        names = [f"{base}.{alias.name}" for alias in node.names] + [base]
    found = []
    for name in names:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        if name and name != module and not module.startswith(name + "."):
            found.append(name)
    return found


def _import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for module, file in MODULES.items():
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module].update(_imported(module, node))
    return graph


GRAPH = _import_graph()


def _cycle_from(start: str) -> list[str] | None:
    """A path of imports from ``start`` back to itself, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        module, path = stack.pop()
        for target in GRAPH[module]:
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def _task_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if parts[:2] == ["seqgen", "tasks"] and len(parts) > 2 else None


def test_the_import_graph_sees_the_package() -> None:
    assert "seqgen.tasks.translation.pipeline" in GRAPH
    assert "seqgen.decoding.search" in GRAPH["seqgen.decoding.beam"]
    assert "seqgen.task" in GRAPH["seqgen.recipes"]


def test_no_import_cycle() -> None:
    cycles = [cycle for module in sorted(GRAPH) if (cycle := _cycle_from(module))]
    assert not cycles, f"import cycle: {' -> '.join(cycles[0])}"


def test_shared_layers_never_name_a_task_and_tasks_never_import_each_other() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        own = _task_of(module)
        for target in targets:
            task = _task_of(target)
            shared_names_task = own is None and task is not None
            # The package's root types its API with the tasks' pipelines, and the benchmark
            # (an app above the layers) measures tasks by name.
            app = module == "seqgen" or module.startswith("seqgen.benchmark")
            if (shared_names_task and not app) or (own and task and own != task):
                wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_every_function_is_short() -> None:
    long = []
    for module, file in MODULES.items():
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                docstring = ast.get_docstring(node, clean=False)
                if docstring:
                    lines -= docstring.count("\n") + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, long
