"""The benchmark and load tools are a distribution of their own (bench/, ``udpchat-bench``):
the installed ``udpchat`` holds none of them, and its ``bench`` and ``load`` commands say how
to get them when they are missing."""

from __future__ import annotations

import ast
import pkgutil
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import udpchat
from udpchat.cli import app

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(udpchat.__file__).resolve().parent
BENCH_MODULES = {"benchmark", "harness", "load", "sweep", "worker", "baselines", "netns"}
"""Names the benchmark's modules had when they were part of udpchat."""


def udpchat_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages([str(PACKAGE)], "udpchat.")]


def test_the_udpchat_package_holds_no_benchmark_module() -> None:
    names = udpchat_modules()
    assert "udpchat.demo" in names and "udpchat.cli" in names  # the walk sees the package
    assert not [n for n in names if set(n.split(".")[1:]) & BENCH_MODULES]
    assert not (PACKAGE / "benchmark").exists()


def test_the_wheel_takes_only_udpchat() -> None:
    """What setuptools puts in the wheel: the packages pyproject names, found from the root."""
    from setuptools import find_packages

    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(str(ROOT), include=include)
    assert "udpchat" in packages
    assert all(p == "udpchat" or p.startswith("udpchat.") for p in packages), packages
    assert not [p for p in packages if "bench" in p], packages


def test_udpchat_imports_the_benchmark_only_inside_the_commands_that_run_it() -> None:
    """Only ``udpchat bench`` and ``udpchat load`` import ``udpchat_bench``, inside their
    bodies: every other part of udpchat works without it (the demo included)."""
    importers = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            module = None
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
            elif isinstance(node, ast.Import):
                module = " ".join(alias.name for alias in node.names)
            if module is not None and "udpchat_bench" in module:
                assert id(node) not in top_level, f"{path}: a top-level import of {module}"
                importers.append(path.relative_to(PACKAGE).parts[0])
    assert set(importers) <= {"cli.py", "cli"}, importers


@pytest.mark.parametrize("command", ["bench", "load"])
def test_without_the_benchmark_tools_the_command_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    for name in [n for n in sys.modules if n.split(".")[0] == "udpchat_bench"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "udpchat_bench", None)  # import fails as if not installed
    result: Any = CliRunner().invoke(app, [command])
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"udpchat: udpchat {command} needs the benchmark tools: "
        "pip install -e ./bench (from a udpchat checkout)"
    ]
