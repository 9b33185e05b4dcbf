"""The package's import graph: the development core stays apart from the product, and no module
imports itself through others."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "forward_auth"
DEVCORE = "forward_auth.devcore"
#: The only places in the product that may use the development core.
DEVCORE_USERS = {("forward_auth.cli", "cmd_dev_core"), ("forward_auth.cli", "cmd_demo")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, str | None, bool]]:
    """(imported module, enclosing top-level function or None, under ``if TYPE_CHECKING``)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, str | None, bool]] = []

    def visit(node: ast.AST, function: str | None, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, function, typing_only) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                found.append((base, function, typing_only))
                # ``from . import x`` / ``from .pkg import mod`` may name modules, not attributes
                found.extend((f"{base}.{alias.name}", function, typing_only) for alias in child.names)
            else:
                inner = function
                if function is None and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    inner = child.name
                guard = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
                visit(child, inner, typing_only or guard)

    visit(ast.parse(path.read_text()), None, False)
    return found


def _graph() -> dict[str, set[str]]:
    """Module-level imports between the package's own modules (what runs on import)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {target for target, function, typing_only in _imports(path)
                       if function is None and not typing_only and target in modules and target != name}
    return graph


def test_the_product_imports_the_devcore_only_from_the_cli_commands_that_run_it() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        if module.startswith(DEVCORE):
            continue
        for target, function, _ in _imports(path):
            if target.startswith(DEVCORE) and (module, function) not in DEVCORE_USERS:
                offenders.append(f"{module} ({function or 'module level'}) imports {target}")
    assert offenders == []


def test_the_devcore_imports_nothing_of_the_product() -> None:
    offenders = [f"{_module_name(path)} imports {target}"
                 for path in (PACKAGE / "devcore").rglob("*.py")
                 for target, _, _ in _imports(path)
                 if target.startswith("forward_auth") and not target.startswith(DEVCORE)]
    assert offenders == []


def test_no_import_cycle() -> None:
    graph = _graph()
    assert graph["forward_auth.devcore.resources"] >= {"forward_auth.devcore.state"}  # the graph sees edges
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                walk(target, path + [target])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert cycles == []


def test_serving_loads_no_devcore_module() -> None:
    """What a worker imports (the server, the app, the gunicorn entry point) pulls in no dev core."""
    code = ("import sys, forward_auth.server, forward_auth.wsgi, forward_auth.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('forward_auth.devcore')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
