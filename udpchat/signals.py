"""Stop signals for the commands: Ctrl-C and SIGTERM both mean "leave politely"."""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["interrupt_on_signals"]


def interrupt_on_signals() -> None:
    """Turn SIGINT and SIGTERM into KeyboardInterrupt in the main thread.

    A process started in the background by a non-interactive shell inherits SIGINT
    ignored, and a service manager stops with SIGTERM: either way the relay or client would
    end without a word to the others, or not at all.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(AttributeError, ValueError):  # no SIGTERM on some platforms
        signal.signal(signal.SIGTERM, signal.default_int_handler)
