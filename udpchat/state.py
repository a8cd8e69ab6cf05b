"""Where udpchat keeps what it must remember between runs, and how it writes it there.

A relay's identity key and the relays a user has met are *state* in the sense of the XDG Base
Directory specification: they must survive a restart, but they are neither configuration
nor cache. They live in ``$XDG_STATE_HOME/udpchat/``, by default ``~/.local/state/udpchat/``.
Every path that reads or writes them goes through :func:`state_dir`, so that setting
``XDG_STATE_HOME`` (as the test suite does) moves all of it, subprocesses included.

Writes never leave a half-written file behind: a reader sees the old content or the new one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

__all__ = ["APP_DIR", "STATE_ENV", "create_new", "ensure_dir", "state_dir", "write_atomic"]

STATE_ENV = "XDG_STATE_HOME"
APP_DIR = "udpchat"


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """udpchat's state directory, which may not exist yet.

    The specification says a relative ``XDG_STATE_HOME`` is invalid and must be ignored:
    a path that depends on the current directory would scatter keys around.
    """
    env = os.environ if environ is None else environ
    base = env.get(STATE_ENV, "")
    if not os.path.isabs(base):
        home = env.get("HOME") or str(Path.home())
        base = os.path.join(home, ".local", "state")
    return Path(base) / APP_DIR


def ensure_dir(directory: Path) -> None:
    """Create ``directory`` (mode 0700: what is in it is nobody else's business) if missing.

    Missing parents get the default mode, as with ``mkdir -p``.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _temp_beside(path: Path) -> tuple[int, Path]:
    """A new file next to ``path`` (same file system, so it can be renamed or linked there),
    created exclusively with mode 0600: nobody can have opened it before us."""
    ensure_dir(path.parent)
    for _ in range(16):
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")


def _write_temp(path: Path, data: bytes) -> Path:
    fd, temp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return temp


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600) at once: written beside it, then renamed."""
    temp = _write_temp(path, data)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def create_new(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` (mode 0600) unless it exists; False if it did.

    An existing file is never touched. The data is written to a temporary file that is then
    hard-linked to ``path``, which fails if ``path`` exists: two processes creating the same
    file at once get one winner, and nobody ever reads a file that is still being written.
    """
    temp = _write_temp(path, data)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return True
