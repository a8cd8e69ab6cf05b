"""One root for every exception udpchat raises, so a caller can catch udpchat's and nothing else.

Two branches, as in h11: a ``ProtocolError`` is about bytes from the network (a datagram or
handshake message that cannot be used; the cores count and drop these, they only escape from
the decoders a caller uses directly), a ``UsageError`` is about what the local program asked for
(a state that does not allow it, a full queue, a bad command line or key file). Classes that
were ``ValueError`` before keep that base too, so existing ``except ValueError`` still works.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "UdpchatError", "UsageError"]


class UdpchatError(Exception):
    """Anything udpchat raises on purpose."""


class ProtocolError(UdpchatError):
    """Bytes from the network that are not valid udpchat, or do not authenticate."""


class UsageError(UdpchatError):
    """The local program or user asked for something that cannot be done now or at all."""
