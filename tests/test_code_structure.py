"""The house rules of issue #11 that a reader meets in the code itself, kept by a test.

- No function body longer than ``MAX_BODY_LINES``: counted from the first statement after the docstring
  to the end, without nested functions and classes (they are measured on their own). A typer command's
  option declarations live in its signature and do not count; its body does.
- No private name imported from another subpackage (a package may use its own private modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

import lftml

SRC = Path(lftml.__file__).parent
MAX_BODY_LINES = 80


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of ``fn``'s own body: docstring, nested functions/classes (with decorators) excluded."""
    body = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    lines = set(range(body[0].lineno, fn.end_lineno + 1))
    for node in ast.walk(fn):
        if node is not fn and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            lines -= set(range(start, node.end_lineno + 1))
    return len(lines)


def test_body_lines_counts_own_statements_only():
    """The measure itself: the docstring and a nested function are not counted, every other line is."""
    fn = ast.parse('def f():\n    """doc."""\n    a = 1\n\n    def g():\n        return 2\n    return a\n').body[0]
    assert body_lines(fn) == 3  # "a = 1", the blank line, "return a"
    assert body_lines(fn.body[2]) == 1
    assert body_lines(ast.parse("def f():\n    a = 1\n    b = 2\n    return a + b\n").body[0]) == 3


def test_no_function_body_is_longer_than_80_lines():
    too_long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > MAX_BODY_LINES:
                too_long.append(f"{path.relative_to(SRC)}::{node.name} ({body_lines(node)} lines)")
    assert not too_long, "split these where a reader would want them split: " + ", ".join(too_long)


def _source_package(module: str, name: str) -> str:
    """The package that owns ``module.name``: ``module`` itself if ``name`` is its submodule or
    ``module`` is a package, otherwise the package containing ``module``."""
    folder = SRC.joinpath(*module.split(".")[1:])
    if (folder / f"{name}.py").exists() or (folder / "__init__.py").exists():
        return module
    return module.rsplit(".", 1)[0]


def test_no_private_names_imported_across_subpackages():
    offenders = []
    for path in _modules():
        package = ".".join(("lftml",) + path.relative_to(SRC).parent.parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lftml"):
                offenders += [f"{path.relative_to(SRC)}: from {node.module} import {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")
                              and _source_package(node.module, a.name) != package]
    assert not offenders, offenders
    assert _source_package("lftml.diffusion.training", "_train_locked") == "lftml.diffusion"  # would be caught
