"""The scripts in benchmarks/ import only names the package has.

They are run by hand, not by the suite (they take minutes and measure speed), so a renamed or
moved function would otherwise be found only when someone next measures: every
``from urbansound... import name`` and attribute read of an imported urbansound module in them,
inside functions too, must resolve.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.helpers import REPO

SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))


def _imports(tree: ast.AST) -> list[tuple[int, str, str | None]]:
    """``(line, module, name)`` of every urbansound import (name None: the module itself)."""
    out: list[tuple[int, str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("urbansound"):
            out += [(node.lineno, node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [
                (node.lineno, a.name, None) for a in node.names if a.name.startswith("urbansound")
            ]
    return out


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound to urbansound modules (``from urbansound.features import cache as c``)."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("urbansound"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                try:
                    importlib.import_module(full)
                except ImportError:
                    continue
                aliases[a.asname or a.name] = full
    return aliases


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_a_benchmark_imports_only_names_the_package_has(script: Path) -> None:
    tree = ast.parse(script.read_text(), filename=str(script))
    missing = []
    for line, module, name in _imports(tree):
        mod = importlib.import_module(module)
        if name is not None and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{script.name}:{line}: {module}.{name}")
    aliases = _module_aliases(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            mod = importlib.import_module(aliases[node.value.id])
            if not hasattr(mod, node.attr):
                missing.append(f"{script.name}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    assert not missing, "names the package no longer has: " + ", ".join(missing)
