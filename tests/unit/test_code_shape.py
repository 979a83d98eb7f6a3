"""The code keeps the shape the project promises: small modules and functions, and a README
layout that names every package of the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "watcher"
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 50
HOT_LOOPS: dict[str, str] = {}
"""``path:function`` allowed past the function limit, each with the reason the README gives."""


def _python_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_is_over_300_lines() -> None:
    """Every module in watcher/ has at most 300 lines."""
    long = {
        str(path.relative_to(ROOT)): lines
        for path in _python_files()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_50_lines() -> None:
    """Every function in watcher/ has at most 50 lines, but for the named hot loops."""
    long: dict[str, int] = {}
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lines = node.end_lineno - node.lineno + 1
                name = f"{path.relative_to(ROOT)}:{node.name}"
                if lines > MAX_FUNCTION_LINES and name not in HOT_LOOPS:
                    long[name] = lines
    assert long == {}


def _layout_entries() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Layout\n", 1)[1]
    block = section.split("```", 2)[1]
    return set(re.findall(r"^(watcher/\S+)", block, flags=re.MULTILINE))


def test_readme_layout_names_every_package_and_top_level_module() -> None:
    """The README's layout has one line for each package and top-level module, and no more."""
    actual = {
        f"watcher/{path.name}/"
        for path in PACKAGE.iterdir()
        if path.is_dir() and (path / "__init__.py").exists()
    }
    actual |= {
        f"watcher/{path.relative_to(PACKAGE).parent}/" for path in PACKAGE.glob("*/*/__init__.py")
    }
    actual |= {
        f"watcher/{path.name}"
        for path in PACKAGE.glob("*.py")
        if path.name not in {"__init__.py", "__main__.py"}
    }
    assert _layout_entries() == actual
