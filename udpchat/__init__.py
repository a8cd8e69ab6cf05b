"""udpchat: a multi-user terminal chat over UDP with its own reliability layer.

The public API is what ``__all__`` lists; everything else is internal and may change. Two ways
to use it:

- the shells, which own a socket and a thread: ``RelayServer(RelayOptions(...)).start()`` and
  ``ChatClient(ClientOptions(nick=..., server=...)).start()``, whose events (``ClientEvent``)
  come back through a callback or ``next_event``;
- the sans-I/O cores, for one loop driving many members or a simulated network:
  ``ClientSession`` and ``RelayCore`` are ``Endpoint``s (bytes and ``now`` in, datagrams,
  events and the next timer out), and ``SimNetwork`` runs them on a virtual clock.

Every exception udpchat raises is a ``UdpchatError``: a ``ProtocolError`` for bytes from the
network that cannot be used, a ``UsageError`` for a request the program or user made that
cannot be done.

Names are imported on first use, so ``import udpchat`` stays cheap for the command line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from udpchat.chat_client import ChatClient, ClientOptions
    from udpchat.client.config import (
        ClientConfig,
        ClientStats,
        LocalProtocolError,
        QueueFull,
        Trust,
    )
    from udpchat.client.session import ClientSession
    from udpchat.client.states import SessionState
    from udpchat.endpoint import Address, Endpoint
    from udpchat.errors import ProtocolError, UdpchatError, UsageError
    from udpchat.events import (
        ClientEvent,
        Closed,
        ConnectionLost,
        ErrorReported,
        HistoryGap,
        JoinRejected,
        MemberJoined,
        MemberLeft,
        MemberRenamed,
        MembersJoined,
        MembersLeft,
        MembersListed,
        MessagePending,
        MessageReceived,
        MessageRefused,
        PrivateReceived,
        Reconnecting,
        RelayMoved,
        Welcomed,
    )
    from udpchat.impair import ImpairmentConfig
    from udpchat.known_relays import TrustStore
    from udpchat.link.config import LinkConfig
    from udpchat.relay.config import RelayConfig, RelayStats
    from udpchat.relay.core import RelayCore
    from udpchat.relay_server import RelayOptions, RelayServer
    from udpchat.sim import SimNetwork

# Where each public name lives.
_HOMES = {
    "ChatClient": "udpchat.chat_client",
    "ClientOptions": "udpchat.chat_client",
    "ClientConfig": "udpchat.client.config",
    "ClientStats": "udpchat.client.config",
    "LocalProtocolError": "udpchat.client.config",
    "QueueFull": "udpchat.client.config",
    "Trust": "udpchat.client.config",
    "TrustStore": "udpchat.known_relays",
    "ClientSession": "udpchat.client.session",
    "SessionState": "udpchat.client.states",
    "Address": "udpchat.endpoint",
    "Endpoint": "udpchat.endpoint",
    "ProtocolError": "udpchat.errors",
    "UdpchatError": "udpchat.errors",
    "UsageError": "udpchat.errors",
    "ClientEvent": "udpchat.events",
    "Closed": "udpchat.events",
    "ConnectionLost": "udpchat.events",
    "ErrorReported": "udpchat.events",
    "HistoryGap": "udpchat.events",
    "JoinRejected": "udpchat.events",
    "MemberJoined": "udpchat.events",
    "MemberLeft": "udpchat.events",
    "MemberRenamed": "udpchat.events",
    "MembersJoined": "udpchat.events",
    "MembersLeft": "udpchat.events",
    "MembersListed": "udpchat.events",
    "MessagePending": "udpchat.events",
    "MessageReceived": "udpchat.events",
    "MessageRefused": "udpchat.events",
    "PrivateReceived": "udpchat.events",
    "Reconnecting": "udpchat.events",
    "RelayMoved": "udpchat.events",
    "Welcomed": "udpchat.events",
    "ImpairmentConfig": "udpchat.impair",
    "LinkConfig": "udpchat.link.config",
    "RelayConfig": "udpchat.relay.config",
    "RelayStats": "udpchat.relay.config",
    "RelayCore": "udpchat.relay.core",
    "RelayOptions": "udpchat.relay_server",
    "RelayServer": "udpchat.relay_server",
    "SimNetwork": "udpchat.sim",
}

__all__ = [
    "Address", "ChatClient", "ClientConfig", "ClientEvent", "ClientOptions", "ClientSession",
    "ClientStats", "Closed", "ConnectionLost", "Endpoint", "ErrorReported", "HistoryGap",
    "ImpairmentConfig", "JoinRejected", "LinkConfig", "LocalProtocolError", "MemberJoined",
    "MemberLeft", "MemberRenamed", "MembersJoined", "MembersLeft", "MembersListed",
    "MessagePending", "MessageReceived", "MessageRefused", "PrivateReceived", "ProtocolError",
    "QueueFull", "Reconnecting", "RelayConfig", "RelayCore", "RelayMoved", "RelayOptions",
    "RelayServer", "RelayStats", "SessionState", "SimNetwork", "Trust", "TrustStore",
    "UdpchatError", "UsageError", "Welcomed", "__version__",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'udpchat' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
