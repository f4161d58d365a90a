"""The package layout holds: adapters and the queue stay free of model libraries, the layers import one way.

Read from the source (``ast``) or checked in a fresh interpreter, so a stray import fails here and not on a
slim install of an adapter box that has no torch.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("komt_bot", "adapters")
# The libraries of the ``worker`` extra: only komt_bot/engine/ may import them, and only where a model is loaded.
MODEL_LIBRARIES = frozenset(
    {"torch", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors", "tokenizers"}
)
# Engine modules that load or run a model; they may need torch to import (today they all import it lazily).
MODEL_MODULES = frozenset(
    {
        "komt_bot.engine.loading",
        "komt_bot.engine.batching",
        "komt_bot.engine.sequential",
        "komt_bot.engine.fakes.dummy",
        "komt_bot.engine.fakes.tiny",
    }
)
MAX_LINES = 400


def source_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(node: ast.Import | ast.ImportFrom, path: Path) -> Iterator[str]:
    """The absolute names an import statement brings in (for ``from x import y``: ``x`` and ``x.y``)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        package = module_name(path).split(".")
        if path.name != "__init__.py":
            package.pop()
        anchor = package[: len(package) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    yield base
    yield from (f"{base}.{alias.name}" for alias in node.names)


def all_imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every import in a file, at any depth (functions and ``if TYPE_CHECKING`` blocks included)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield from ((node.lineno, name) for name in _imported(node, path))


def import_time_imports(path: Path) -> Iterator[tuple[int, str]]:
    """The imports that run when the module is imported: not in functions, not under ``if TYPE_CHECKING``."""

    def visit(statements: list[ast.stmt]) -> Iterator[tuple[int, str]]:
        for node in statements:
            if isinstance(node, ast.Import | ast.ImportFrom):
                yield from ((node.lineno, name) for name in _imported(node, path))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                yield from visit(node.orelse)
            else:  # class bodies, if/try/with/for/while/match blocks run at import time too
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        yield from visit([child])
                    elif isinstance(child, ast.ExceptHandler | ast.match_case):
                        yield from visit(child.body)

    yield from visit(ast.parse(path.read_text(encoding="utf-8"), str(path)).body)


def top(name: str) -> str:
    return name.split(".", 1)[0]


def test_adapters_and_the_queue_import_without_torch() -> None:
    modules = [
        module_name(path)
        for package in PACKAGES
        for path in source_files(package)
        if path.name != "__main__.py" and module_name(path) not in MODEL_MODULES
    ]
    assert {"komt_bot", "adapters", "adapters.slack", "adapters.discord", "adapters.console"} <= set(modules)
    probe = (
        "import importlib, sys\n"
        f"heavy = {sorted(MODEL_LIBRARIES)!r}\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "    loaded = [lib for lib in heavy if lib in sys.modules]\n"
        "    assert not loaded, f'importing {name} loads {loaded} (python -X importtime -c \"import {name}\")'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *modules],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_only_the_cli_imports_the_adapters() -> None:
    offenders = [
        f"{relative(path)}:{line} imports {name}"
        for path in source_files("komt_bot")
        if not relative(path).startswith("komt_bot/cli/")
        for line, name in all_imports(path)
        if top(name) == "adapters"
    ]
    assert offenders == []


def test_model_libraries_are_imported_at_module_level_only_in_the_engine() -> None:
    offenders = [
        f"{relative(path)}:{line} imports {name} at module level"
        for package in PACKAGES
        for path in source_files(package)
        if not relative(path).startswith("komt_bot/engine/")
        for line, name in import_time_imports(path)
        if top(name) in MODEL_LIBRARIES
    ]
    assert offenders == []


def test_the_engine_knows_nothing_of_redis() -> None:
    engine = source_files("komt_bot/engine")
    offenders = [
        f"{relative(path)}:{line} imports {name}"
        for path in engine
        for line, name in all_imports(path)
        if top(name) in ("redis", "fakeredis")
    ]
    # Nor through the project modules it imports (komt_bot.settings, komt_bot.errors, ...).
    files = {module_name(path): path for path in source_files("komt_bot")}
    seen: set[str] = set()
    todo = [(module_name(path), module_name(path)) for path in engine]
    while todo:
        module, chain = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [(".".join(parts[:n]), chain) for n in range(1, len(parts)) if ".".join(parts[:n]) in files]
        for line, name in import_time_imports(files[module]):
            if top(name) in ("redis", "fakeredis"):
                offenders.append(f"{relative(files[module])}:{line} imports {name} (via {chain})")
            elif name in files:
                todo.append((name, f"{chain} -> {name}"))
    assert "komt_bot.settings" in seen
    assert offenders == []


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_stay_small(package: str) -> None:
    sizes = {relative(path): len(path.read_text(encoding="utf-8").splitlines()) for path in source_files(package)}
    too_long = {path: lines for path, lines in sizes.items() if lines > MAX_LINES}
    assert too_long == {}, f"over {MAX_LINES} lines: split them"
