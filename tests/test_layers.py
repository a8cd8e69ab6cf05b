"""The layers of ARCHITECTURE.md hold: the sans-I/O core does no I/O of its own and imports
nothing above it; front ends are not imported by the runtime."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import udpchat

pytestmark = pytest.mark.unit

PACKAGE = Path(udpchat.__file__).parent
# The sans-I/O core: packages and modules.
CORE = [
    "client",
    "relay",
    "link",
    "endpoint.py",
    "errors.py",
    "events.py",
    "wire.py",
    "wiretypes.py",
    "schema.py",
    "messages.py",
    "handshake.py",
    "noise.py",
    "seal.py",
]
IO_MODULES = {"socket", "select", "selectors", "threading", "asyncio", "time", "random", "secrets"}
# What sits above the core: the runtime and the front ends.
ABOVE_CORE = {
    "udpchat.driver",
    "udpchat.transport",
    "udpchat.impaired",
    "udpchat.alarm",
    "udpchat.chat_client",
    "udpchat.relay_server",
    "udpchat.cli",
    "udpchat.ui",
    "udpchat.frontend",
    "udpchat.lines",
    "udpchat.terminal",
    "udpchat.render",
    "udpchat.demo",
    "udpchat.sim",
}
FRONT_ENDS = {"udpchat.ui", "udpchat.frontend", "udpchat.lines", "udpchat.terminal", "udpchat.cli"}
RUNTIME = [
    "driver.py", "transport.py", "impaired.py", "alarm.py", "chat_client.py", "relay_server.py"
]


def _files(names: list[str]) -> list[Path]:
    files: list[Path] = []
    for name in names:
        path = PACKAGE / name
        files.extend(sorted(path.glob("*.py")) if path.is_dir() else [path])
    return files


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _touches(imported: set[str], modules: set[str]) -> set[str]:
    return {name for name in imported for m in modules if name == m or name.startswith(m + ".")}


@pytest.mark.parametrize("path", _files(CORE), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_core_does_no_io_and_imports_nothing_above_it(path: Path) -> None:
    imported = _imports(path)
    assert not {name.split(".")[0] for name in imported} & IO_MODULES
    assert not _touches(imported, ABOVE_CORE)


@pytest.mark.parametrize("path", _files(RUNTIME), ids=lambda p: p.name)
def test_the_runtime_imports_no_front_end(path: Path) -> None:
    assert not _touches(_imports(path), FRONT_ENDS)


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_only_the_redis_store_imports_redis(path: Path) -> None:
    """``redis`` is an optional extra: nothing but udpchat/stores/redis*.py may need it."""
    relative = path.relative_to(PACKAGE)
    if relative.parent == Path("stores") and relative.name.startswith("redis"):
        return
    assert not {name.split(".")[0] for name in _imports(path)} & {"redis"}, relative
