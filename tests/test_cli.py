import subprocess
import sys

from typer.testing import CliRunner

from udpchat import __version__
from udpchat.cli import app


def test_version_flag() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"udpchat {__version__}"


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "udpchat", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert __version__ in out.stdout
