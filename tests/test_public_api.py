"""The public API: what ``udpchat`` exports, that importing it stays cheap, and one error root."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys

import pytest

import udpchat
from udpchat.errors import ProtocolError, UdpchatError, UsageError


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(set(udpchat.__all__) - {"__version__"}))
def test_every_public_name_resolves_to_its_home(name: str) -> None:
    value = getattr(udpchat, name)
    home = importlib.import_module(udpchat._HOMES[name])
    assert value is getattr(home, name)
    assert name in dir(udpchat)


@pytest.mark.unit
def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        udpchat.Nope  # noqa: B018


def _all_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(udpchat.__path__, "udpchat.")
        if not info.name.endswith("__main__")
    ]


@pytest.mark.unit
def test_every_exception_udpchat_defines_has_the_one_root() -> None:
    strays = []
    for name in _all_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not attr.startswith("_")
                and not issubclass(value, UdpchatError)
            ):
                strays.append(f"{name}.{attr}")
    assert strays == []
    assert issubclass(ProtocolError, UdpchatError) and issubclass(UsageError, UdpchatError)


@pytest.mark.e2e
def test_importing_udpchat_loads_no_shell_and_no_core() -> None:
    code = (
        "import sys, udpchat; "
        "print(sorted(m for m in sys.modules if m.startswith('udpchat.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.unit
def test_all_lists_exactly_the_names_with_a_home() -> None:
    assert sorted(udpchat.__all__) == sorted(["__version__", *udpchat._HOMES])


@pytest.mark.unit
def test_every_module_says_what_it_exports() -> None:
    """``__all__`` in every module: what is not in it is internal to the package."""
    missing = []
    for name in _all_modules():
        module = importlib.import_module(name)
        defined = [
            attr
            for attr, value in vars(module).items()
            if not attr.startswith("_") and getattr(value, "__module__", None) == name
        ]
        if defined and not hasattr(module, "__all__"):
            missing.append(name)
        unlisted = [
            attr
            for attr in defined
            if attr not in getattr(module, "__all__", ())
            and (inspect.isclass(vars(module)[attr]) or inspect.isfunction(vars(module)[attr]))
        ]
        missing.extend(f"{name}.{attr}" for attr in unlisted)
    assert missing == []
