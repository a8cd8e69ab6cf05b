"""JOIN and ACCEPT as Noise messages, and the stateless reset token (protocol.md 4, 7.2).

The glue between the datagram format (udpchat.wire), the Noise handshake (udpchat.noise) and
the session keys (udpchat.seal), shared by the client and relay cores and by the tools that
speak the protocol by hand (the load generator, the benchmarks, the tests' fake client), so
that there is one way to build a JOIN and to read an ACCEPT.

The prologue binds the handshake to the protocol version and the exchange it belongs
to: ``b"udpchat/3" || nonce || cookie``. A JOIN replayed with another cookie, or an ACCEPT
for another HELLO, does not authenticate.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from udpchat import wire
from udpchat.noise import DHLEN, Ephemeral, Initiator, NoiseError, Responder
from udpchat.seal import PskDeriver, SessionKeys

__all__ = [
    "PROLOGUE_LABEL", "RESET_LABEL", "Initiator", "Joiner", "Responder", "accept",
    "finish_join", "prologue", "read_join", "reset_secret", "reset_token", "resume_proof",
    "resume_secret", "start_join",
]

PROLOGUE_LABEL = b"udpchat/%d" % wire.PROTOCOL_VERSION
RESET_LABEL = b"udpchat/2 stateless reset"
"""protocol.md 7.2: the label the reset secret is derived from the static key with."""


def prologue(nonce: bytes, cookie: bytes) -> bytes:
    return PROLOGUE_LABEL + nonce + cookie


def start_join(
    nonce: bytes,
    cookie: bytes,
    relay_key: bytes,
    psk: bytes | None,
    ephemeral: bytes | Ephemeral,
    nick: str,
    resume: wire.Resume | None,
) -> tuple[bytes, Initiator]:
    """A JOIN (1200 bytes) carrying Noise message 1, and the state to read the ACCEPT with."""
    payload = wire.encode_join_payload(nick, resume)
    initiator = Initiator(relay_key, prologue(nonce, cookie), psk, ephemeral, payload)
    return wire.encode_join(nonce, cookie, initiator.message), initiator


def finish_join(
    initiator: Initiator, accept: wire.Accept, padded: bool
) -> tuple[wire.AcceptPayload, SessionKeys]:
    """ACCEPT's payload and the client's session keys; raises ``NoiseError`` if the ACCEPT
    does not authenticate (not from the relay we trust, or not for this JOIN) and
    ``DecodeError`` if its payload is malformed."""
    payload, keys = initiator.read_response(accept.handshake)
    return wire.decode_accept_payload(payload), SessionKeys(keys.initiator, keys.responder, padded)


def read_join(
    static_private: bytes, join: wire.Join, psk: bytes | None
) -> tuple[Responder, wire.JoinPayload]:
    """Read a JOIN's Noise message 1; raises ``NoiseError`` when it does not authenticate (a
    wrong room key, or none) and ``DecodeError`` when its payload is malformed."""
    responder = Responder(static_private, prologue(join.nonce, join.cookie), psk, join.handshake)
    return responder, wire.decode_join_payload(responder.payload)


def accept(
    responder: Responder,
    nonce: bytes,
    token: bytes,
    payload: wire.AcceptPayload,
    ephemeral: bytes | Ephemeral,
    padded: bool,
) -> tuple[bytes, SessionKeys]:
    """The ACCEPT carrying Noise message 2, and the relay's session keys."""
    message, keys = responder.respond(ephemeral, wire.encode_accept_payload(payload))
    return wire.encode_accept(nonce, token, message), SessionKeys(
        keys.responder, keys.initiator, padded
    )


def reset_secret(static_private: bytes) -> bytes:
    """protocol.md 7.2: a secret only the holder of the relay's static key can compute, so
    that the same relay identity, restarted, can still prove a RESET genuine."""
    return hmac.new(static_private, RESET_LABEL, hashlib.sha256).digest()


def reset_token(secret: bytes, token: bytes) -> bytes:
    """The reset token of a session: HMAC-SHA256(reset secret, session token), 16 bytes."""
    return hmac.new(secret, token, hashlib.sha256).digest()[: wire.RESET_TOKEN_SIZE]


class Joiner:
    """The client side of one handshake, for tools that speak the protocol by hand (the load
    generator, benchmarks, test clients): the JOIN that answers a CHALLENGE, and the session
    keys from the ACCEPT that answers it. Every handshake it starts is kept, since the relay
    answers a retransmitted JOIN with the ACCEPT of the first."""

    def __init__(
        self,
        nonce: bytes,
        nick: str,
        rng: Callable[[int], bytes],
        resume: wire.Resume | None = None,
        room_key: PskDeriver | None = None,
    ) -> None:
        self.nonce = nonce
        self.nick = nick
        self.resume = resume
        self._rng = rng
        self._room_key = room_key
        self._started: list[Initiator] = []
        self.relay_key: bytes | None = None
        self._spare: Ephemeral | None = None

    def prepare(self) -> None:
        """Make the next JOIN's ephemeral key now (once the HELLO has gone), not at the
        CHALLENGE: its public half costs as much as a DH."""
        if self._spare is None:
            self._spare = Ephemeral(self._rng(DHLEN))

    def join_for(self, challenge: wire.Challenge) -> bytes:
        psk = None if self._room_key is None else self._room_key(challenge.relay_key)
        ephemeral = self._spare if self._spare is not None else Ephemeral(self._rng(DHLEN))
        self._spare = None  # one handshake per ephemeral key
        join, initiator = start_join(
            self.nonce,
            challenge.cookie,
            challenge.relay_key,
            psk,
            ephemeral,
            self.nick,
            self.resume,
        )
        self.relay_key = challenge.relay_key
        self._started.append(initiator)
        return join

    def keys_for(self, accept: wire.Accept) -> tuple[wire.AcceptPayload, SessionKeys] | None:
        """ACCEPT's payload and keys, or None if it answers none of our JOINs."""
        for initiator in reversed(self._started):
            try:
                return finish_join(initiator, accept, self._room_key is not None)
            except (NoiseError, wire.DecodeError):
                continue
        return None


RESUME_LABEL = b"udpchat/2 resume"


def resume_secret(client_to_relay_key: bytes) -> bytes:
    """protocol.md 4.2: a secret of one session that only its two ends know, derived from the
    key of the client-to-relay direction."""
    return hmac.new(client_to_relay_key, RESUME_LABEL, hashlib.sha256).digest()


def resume_proof(secret: bytes, nonce: bytes) -> bytes:
    """The proof a rejoining client puts in ``resume``: HMAC-SHA256(the old session's resume
    secret, the new JOIN's nonce), 16 bytes. The token and epoch alone are visible to anyone
    on the path; without this anyone there could take over the session."""
    return hmac.new(secret, nonce, hashlib.sha256).digest()[: wire.RESUME_PROOF_SIZE]
