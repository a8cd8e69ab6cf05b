"""The one error a room store raises: it cannot be used, said in one line."""

from __future__ import annotations

from udpchat.errors import UdpchatError

__all__ = ["StoreError"]


class StoreError(UdpchatError):
    """A room store that cannot be opened or used: a foreign, damaged or unreadable file,
    or a store URL this version does not support."""
