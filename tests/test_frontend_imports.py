"""The plain and JSON front ends run without prompt_toolkit: a pipe or a bot needs no terminal
library, and starts faster without one."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

LINE_MODULES = (
    "udpchat.ui",
    "udpchat.lines",
    "udpchat.frontend",
    "udpchat.render",
    "udpchat.style",
    "udpchat.commands",
    "udpchat.events",
)


def imports_prompt_toolkit(*modules: str) -> bool:
    """Whether importing ``modules`` in a fresh interpreter loads prompt_toolkit."""
    code = "; ".join(
        [
            "import importlib, sys",
            *(f"importlib.import_module({name!r})" for name in modules),
            "print('prompt_toolkit' in sys.modules)",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return out.stdout.strip() == "True"


def test_the_plain_and_json_paths_do_not_import_prompt_toolkit() -> None:
    assert not imports_prompt_toolkit(*LINE_MODULES)


def test_the_check_would_see_prompt_toolkit() -> None:
    assert imports_prompt_toolkit("udpchat.terminal")
