"""Stop signals become KeyboardInterrupt, even when the process inherited SIGINT ignored."""

from __future__ import annotations

import signal

import pytest

from udpchat.signals import interrupt_on_signals

pytestmark = pytest.mark.unit


def test_ignored_sigint_and_sigterm_become_interrupts() -> None:
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job inherits it
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        interrupt_on_signals()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
