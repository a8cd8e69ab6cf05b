"""The session's states and the (state, trigger) table that moves it between them.

Every change of state goes through ``StateMachine.fire``: a trigger the table does not list
for the current state raises ``LocalProtocolError``, so an impossible sequence is a bug found
at once, never a silent state. The table is the whole life cycle (protocol.md 4, 7):

* IDLE -CONNECT-> CONNECTING (HELLO) -CHALLENGE-> JOINING (JOIN) -ACCEPT-> ACCEPTED (a link,
  WELCOME due first on it) -WELCOME-> JOINED;
* losing the relay (LOSE) from any of these but IDLE waits in RECONNECTING; RETRY starts a new
  HELLO (a new attempt during the first join, or the next rejoin);
* QUIT with a link goes to LEAVING, or to LEAVING_EARLY when WELCOME has not come yet (it is
  still read first on the link, then nothing is set up from it);
* CLOSE ends every state but CLOSED, which is final.
"""

from __future__ import annotations

from enum import Enum

from udpchat.client.config import LocalProtocolError

__all__ = [
    "ATTEMPTING", "FEEDING", "HANDSHAKING", "LEAVING_STATES", "LINKED", "OPEN", "TABLE",
    "WELCOME_DUE", "SessionState", "StateMachine", "Trigger",
]


class SessionState(Enum):
    IDLE = "idle"  # created, connect() not called yet
    CONNECTING = "connecting"  # HELLO sent, waiting for CHALLENGE
    JOINING = "joining"  # JOIN sent, waiting for ACCEPT
    ACCEPTED = "accepted"  # ACCEPT taken: a link, waiting for WELCOME on it
    JOINED = "joined"  # WELCOME processed: chatting
    RECONNECTING = "reconnecting"  # the relay was lost; waiting for the next attempt
    LEAVING_EARLY = "leaving early"  # QUIT sent before WELCOME came; WELCOME still comes first
    LEAVING = "leaving"  # QUIT sent, waiting for its acknowledgement
    CLOSED = "closed"  # final

    # Members are singletons compared by identity: hash them by identity too, in C (Enum's
    # own hash is Python code, and the session tests its state against these sets on every
    # datagram and every timer read).
    __hash__ = object.__hash__


class Trigger(Enum):
    CONNECT = "connect"  # the user starts the first join
    CHALLENGE = "take a challenge"  # a CHALLENGE for our nonce
    ACCEPT = "take an accept"  # an ACCEPT that answers our JOIN
    WELCOME = "take a welcome"  # WELCOME, first on the link
    RETRY = "start a new attempt"  # a new HELLO: lost during the first join, or next rejoin
    LOSE = "wait to rejoin"  # the relay was lost (or refused a rejoin): wait, then RETRY
    QUIT = "quit"  # the user leaves while a link exists
    CLOSE = "close"  # the session ends

    __hash__ = object.__hash__  # as SessionState's: identity, in C


_S = SessionState
_T = Trigger

TABLE: dict[tuple[SessionState, Trigger], SessionState] = {
    (_S.IDLE, _T.CONNECT): _S.CONNECTING,
    (_S.IDLE, _T.CLOSE): _S.CLOSED,
    (_S.CONNECTING, _T.CHALLENGE): _S.JOINING,
    (_S.CONNECTING, _T.RETRY): _S.CONNECTING,
    (_S.CONNECTING, _T.LOSE): _S.RECONNECTING,
    (_S.CONNECTING, _T.CLOSE): _S.CLOSED,
    # Another CHALLENGE during the JOIN: a fresh cookie, or a relay that changed its key.
    (_S.JOINING, _T.CHALLENGE): _S.JOINING,
    (_S.JOINING, _T.ACCEPT): _S.ACCEPTED,
    (_S.JOINING, _T.RETRY): _S.CONNECTING,
    (_S.JOINING, _T.LOSE): _S.RECONNECTING,
    (_S.JOINING, _T.CLOSE): _S.CLOSED,
    (_S.ACCEPTED, _T.WELCOME): _S.JOINED,
    (_S.ACCEPTED, _T.QUIT): _S.LEAVING_EARLY,
    (_S.ACCEPTED, _T.RETRY): _S.CONNECTING,
    (_S.ACCEPTED, _T.LOSE): _S.RECONNECTING,
    (_S.ACCEPTED, _T.CLOSE): _S.CLOSED,
    (_S.JOINED, _T.QUIT): _S.LEAVING,
    (_S.JOINED, _T.LOSE): _S.RECONNECTING,
    (_S.JOINED, _T.CLOSE): _S.CLOSED,
    (_S.RECONNECTING, _T.RETRY): _S.CONNECTING,
    (_S.RECONNECTING, _T.CLOSE): _S.CLOSED,
    (_S.LEAVING_EARLY, _T.WELCOME): _S.LEAVING,
    (_S.LEAVING_EARLY, _T.CLOSE): _S.CLOSED,
    (_S.LEAVING, _T.CLOSE): _S.CLOSED,
}

# The states in which CHALLENGE, ACCEPT and REJECT can answer something we sent.
HANDSHAKING = frozenset({_S.CONNECTING, _S.JOINING})
# The states with a link (and only those: the link is retired on leaving them).
LINKED = frozenset({_S.ACCEPTED, _S.JOINED, _S.LEAVING_EARLY, _S.LEAVING})
LEAVING_STATES = frozenset({_S.LEAVING_EARLY, _S.LEAVING})
# The states in which the first message on the link must be WELCOME.
WELCOME_DUE = frozenset({_S.ACCEPTED, _S.LEAVING_EARLY})
# The states in which queued messages go to the link (WELCOME came, or only QUIT is left).
FEEDING = frozenset({_S.JOINED, *LEAVING_STATES})
# The states whose attempt deadline counts: from HELLO until WELCOME.
ATTEMPTING = frozenset({_S.CONNECTING, _S.JOINING, _S.ACCEPTED})
# The states in which the user may queue messages and quit.
OPEN = frozenset({_S.IDLE, *ATTEMPTING, _S.JOINED, _S.RECONNECTING})


class StateMachine:
    """The current state, changed only by a trigger the table lists for it."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = SessionState.IDLE

    def allows(self, trigger: Trigger) -> bool:
        return (self.state, trigger) in TABLE

    def fire(self, trigger: Trigger) -> SessionState:
        """Move to the state the table names for ``trigger``, or raise."""
        target = TABLE.get((self.state, trigger))
        if target is None:
            raise LocalProtocolError(f"cannot {trigger.value} while {self.state.value}")
        self.state = target
        return target
