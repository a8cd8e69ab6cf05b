"""The handshake side of a client session (protocol.md 4, 4.2, 7.1, 8), sans I/O.

``Handshake`` builds and retransmits HELLO and JOIN, checks the relay key a CHALLENGE carries
(trust callback, room key), keeps the Noise initiators of the current nonce so that whichever
ACCEPT comes can be read, recognises the REJECTs that answer what it sent, and carries the
resume (with its proof) from one link to the next JOIN. ``Backoff`` spaces rejoin attempts.

Invariants: the nonce changes only when the last JOIN was answered (or none was sent), so a
relay that admitted a JOIN and lost only its ACCEPT can send that ACCEPT again; the JOIN for one
cookie is built once and resent byte for byte; the retry interval starts at 250 ms (on a
rejoin, at three times the last link's smoothed RTT, 100 to 250 ms: ``first_retry``) and
doubles up to eight times that, 2 s at most (``max_retry``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace

from udpchat import handshake as hs
from udpchat import wire
from udpchat.client.config import Counters, Trust
from udpchat.errors import UdpchatError
from udpchat.names import MAX_NICK_LENGTH, nick_error
from udpchat.noise import DHLEN, Ephemeral, NoiseError, usable_public_key
from udpchat.seal import PskDeriver, SessionKeys

__all__ = [
    "AFTER_BUSY", "FINAL_REJECTS", "HANDSHAKE_FIRST_RETRY", "HANDSHAKE_MAX_RETRY",
    "MAX_RETRY_FACTOR", "MIN_HANDSHAKE_RETRY", "NEEDS_KEY", "NO_ROOM_KEY",
    "RECONNECT_FIRST_DELAY", "Backoff", "Handshake", "Refused", "first_retry", "max_retry",
]

# protocol.md 4: HELLO and JOIN are retransmitted after 250 ms, doubling up to 2 s.
HANDSHAKE_FIRST_RETRY = 0.25
HANDSHAKE_MAX_RETRY = 2.0  # a lossy path needs attempts more than it needs quiet
# The least first retry of a rejoin's handshake, however short the last link's round trip: a
# whole room rejoining at once sends its HELLOs at most ten times a second each.
MIN_HANDSHAKE_RETRY = 0.1
# The retry interval doubles up to this many first retries (and 2 s): 2 s from 250 ms.
MAX_RETRY_FACTOR = 8


def first_retry(last_rtt: float | None) -> float:
    """The handshake's first retransmission wait (protocol.md 4): 250 ms on a path never
    measured; on a rejoin, three times the last link's smoothed RTT (the RTO of an estimator
    started from it, RFC 6298: SRTT + 4 * SRTT / 2), as RFC 9002 6.2.2 lets a resumed
    connection start from the last one's, but never less than 100 ms nor more than the
    250 ms of an unmeasured path: a rejoin is never slower to retry than a first join. On a
    LAN under loss a lost HELLO then costs a tenth of a second, not a quarter."""
    if last_rtt is None:
        return HANDSHAKE_FIRST_RETRY
    return min(max(3 * last_rtt, MIN_HANDSHAKE_RETRY), HANDSHAKE_FIRST_RETRY)


def max_retry(first: float) -> float:
    """The longest retry interval of a schedule that starts at ``first``: a path measured
    fast is asked again soon enough that a fail-over's few seconds hold several tries."""
    return min(MAX_RETRY_FACTOR * first, HANDSHAKE_MAX_RETRY)


# protocol.md 7.1: the first wait before rejoining; it doubles up to max_reconnect_delay.
RECONNECT_FIRST_DELAY = 0.5
# protocol.md 4: hashes of the handshake datagrams sent in one attempt, kept to recognise a
# REJECT bound to one of them. An attempt sends about a dozen; the bound only caps memory.
MAX_HANDSHAKE_HASHES = 32
# psks derived per relay key (protocol.md 8): a few, for a client that meets several relays.
MAX_CACHED_KEYS = 4
# JOIN handshakes kept for one nonce: a retransmitted JOIN with a fresh cookie, or a new
# attempt with the same nonce, may be answered with the ACCEPT of an earlier one (protocol.md 4).
MAX_KEPT_HANDSHAKES = 4
# protocol.md 4: a CHALLENGE says whether the relay has a room key; a mismatch is final.
NEEDS_KEY = "this room needs a key: give it with --key or UDPCHAT_KEY"
NO_ROOM_KEY = "this relay has no room key; join without --key"
# protocol.md 4.3: after the wait a BUSY asks for, the attempt has at least this long left.
AFTER_BUSY = 5.0
# REJECT codes after which trying again cannot help, even on a rejoin.
FINAL_REJECTS = {wire.RejectCode.NICK_INVALID, wire.RejectCode.VERSION, wire.RejectCode.BAD_KEY}


class Refused(UdpchatError):
    """The join must end: the CHALLENGE names a relay or a room we must not join."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Handshake:
    """HELLO and JOIN for one session, attempt after attempt, and the resume they carry."""

    def __init__(
        self,
        rng: Callable[[int], bytes],
        room_key: PskDeriver | None,
        trust: Trust,
        counters: Counters,
        now: float,
    ) -> None:
        self._rng = rng
        # protocol.md 8: the psk is derived for the relay key in the CHALLENGE, once per key.
        self._room_key = room_key
        self._psks: dict[bytes, bytes] = {}
        self._trust = trust
        self._counters = counters
        self.relay_key = b""  # the static key of the relay this handshake talks to
        self._may_change_key = True  # once per HELLO (see on_challenge)
        self.out: list[bytes] = []  # HELLO and JOIN, as they go on the wire
        self.nonce = b""
        self._join_unanswered = False  # the last JOIN sent has had no ACCEPT or REJECT
        self._cookie: bytes | None = None
        self._join_nick = ""
        self.retry_at: float | None = None
        self._first_retry = HANDSHAKE_FIRST_RETRY  # of this attempt (``first_retry``)
        self._retry_interval = HANDSHAKE_FIRST_RETRY
        self._sends = 0
        self._sent_at = now
        # request_hash of every HELLO and JOIN of this attempt (protocol.md 4)
        self._sent_hashes: deque[bytes] = deque(maxlen=MAX_HANDSHAKE_HASHES)
        self.unverified: str | None = None  # what an unbound REJECT said, if one came
        # Noise handshakes started for the current nonce, newest last, and the JOIN to resend.
        self._initiators: deque[hs.Initiator] = deque(maxlen=MAX_KEPT_HANDSHAKES)
        self._join_datagram = b""
        # The next JOIN's ephemeral key, made while the HELLO is on its way (``prepare``)
        self._spare: Ephemeral | None = None
        self._hello_rtt: float | None = None
        self.attempt_deadline: float | None = None
        self.join_deadline: float | None = None  # the first join's, over all its attempts
        # protocol.md 4.2: the resume the next JOIN carries, the secret that proves it, and
        # the current link's secret (which becomes the proof's once that link is lost)
        self._resume: wire.Resume | None = None
        self._resume_secret = b""
        self._link_secret = b""
        self._suffix_base: str | None = None
        self._suffix_count = 0

    @property
    def keyed(self) -> bool:
        return self._room_key is not None

    # --- attempts -----------------------------------------------------------------------------

    def start_attempt(
        self, nick: str, now: float, timeout: float, first_join: bool,
        last_rtt: float | None = None,
    ) -> None:
        """A fresh attempt with its own deadline (within the first join's, during that one),
        retransmitting on the schedule ``first_retry(last_rtt)`` starts."""
        deadline = now + timeout
        if first_join and self.join_deadline is not None:
            deadline = min(deadline, self.join_deadline)
        self.attempt_deadline = deadline
        self._first_retry = first_retry(last_rtt)
        self._begin(nick, now)

    def _begin(self, nick: str, now: float) -> None:
        """HELLO and its retransmission timer.

        The nonce is new unless the last attempt's JOIN went unanswered: the relay may have
        admitted it and lost only the ACCEPT, and the same nonce from the same address gets
        that ACCEPT again (protocol.md 4) instead of a session holding our nickname.
        """
        if not self._join_unanswered or not self.nonce:
            nonce = self._rng(wire.HANDSHAKE_NONCE_SIZE)
            if len(nonce) != wire.HANDSHAKE_NONCE_SIZE:
                size = wire.HANDSHAKE_NONCE_SIZE
                raise ValueError(f"rng returned {len(nonce)} bytes, not {size}")
            self.nonce = nonce
            self._initiators.clear()  # an ACCEPT for another nonce is never ours
        self._join_unanswered = False
        self._may_change_key = True
        self._cookie = None
        self._hello_rtt = None
        self._join_nick = nick
        self._sent_hashes.clear()
        self.send(now, first=True)

    def send(self, now: float, first: bool) -> None:
        """HELLO, or the JOIN built at the CHALLENGE (the same bytes each time: one
        handshake per cookie), with its hash kept: a REJECT bound to it is the relay's answer
        to us (protocol.md 4)."""
        if self._cookie is None:
            datagram = wire.encode_hello(self.nonce)
        else:
            datagram = self._join_datagram
            self._join_unanswered = True
        self._sent_hashes.append(wire.request_hash(datagram))
        self.out.append(datagram)
        if first:
            self._sends = 1
            self._sent_at = now
            self._retry_interval = self._first_retry
        else:
            self._sends += 1
        self.retry_at = now + self._retry_interval
        self._retry_interval = min(self._retry_interval * 2, max_retry(self._first_retry))

    def shorten_attempt(self, until: float) -> None:
        """End the attempt at ``until`` at the latest (a relay of a list that does not
        answer is passed over, protocol.md 6.9)."""
        if self.attempt_deadline is not None:
            self.attempt_deadline = min(self.attempt_deadline, until)

    def extend_attempt(self, until: float) -> None:
        """Let the attempt run until ``until`` (within the first join's deadline)."""
        if self.join_deadline is not None:
            until = min(until, self.join_deadline)
        if self.attempt_deadline is not None:
            self.attempt_deadline = max(self.attempt_deadline, until)

    def stop(self) -> None:
        """No more retransmissions or attempt deadline (a link was adopted, or we wait)."""
        self.retry_at = None
        self.attempt_deadline = None

    @property
    def spare_wanted(self) -> bool:
        """Whether ``prepare`` has work: no ephemeral key waits for the coming JOIN."""
        return self._spare is None

    def prepare(self) -> None:
        """Make the next JOIN's ephemeral key now, after the HELLO has gone: its public half
        is a scalar multiplication, as costly as a DH, better done while the CHALLENGE is on
        its way than between it and the JOIN. Used by exactly one JOIN."""
        if self._spare is None:
            self._spare = Ephemeral(self._rng(DHLEN))

    # --- CHALLENGE ----------------------------------------------------------------------------

    def on_challenge(self, challenge: wire.Challenge, joining: bool, now: float) -> bool:
        """Take a CHALLENGE for our nonce; True when it starts the JOIN (we were sending
        HELLO). Raises ``Refused`` when the relay or the room is one we must not join."""
        if joining and challenge.relay_key != self.relay_key:
            # Another relay key during the JOIN: the relay restarted as another identity
            # between its CHALLENGE and our JOIN, or someone on the path answers for it. The
            # new key is checked and taken once per HELLO, so that at most two psks are
            # derived per HELLO however many CHALLENGEs arrive.
            if not self._may_change_key or not usable_public_key(challenge.relay_key):
                self._counters.unexpected += 1
                return False
            self._may_change_key = False
            if self._take_relay_key(challenge):
                self._start_join(challenge.cookie)
                self.send(now, first=False)
            return False
        if not joining:
            if not self._take_relay_key(challenge):
                return False
            if self._sends == 1:  # Karn: only an unambiguous sample
                self._hello_rtt = now - self._sent_at
            self._start_join(challenge.cookie)
            self.send(now, first=True)
            return True
        if challenge.cookie != self._cookie:
            # Our cookie expired while JOINs were lost: the relay sent a fresh one.
            self._start_join(challenge.cookie)
            self.send(now, first=False)
        return False

    def _take_relay_key(self, challenge: wire.Challenge) -> bool:
        """Check the relay's static key and the room key against what the CHALLENGE says, or
        end the join as protocol.md 4 says. The CHALLENGE carries our nonce, so nobody off
        the path can have sent it."""
        if not usable_public_key(challenge.relay_key):
            # Not a key any relay could hold: forged on the path. Ignored, never trusted (or
            # remembered), and the join goes on waiting for the real CHALLENGE.
            self._counters.malformed += 1
            return False
        if self._room_key is None and challenge.keyed:
            raise Refused(NEEDS_KEY)
        if self._room_key is not None and not challenge.keyed:
            raise Refused(NO_ROOM_KEY)
        refusal = self._trust(challenge.relay_key)
        if refusal is not None:
            raise Refused(refusal)
        self.relay_key = challenge.relay_key
        return True

    def _psk(self) -> bytes | None:
        """The psk for the current relay key: scrypt once per relay identity."""
        room_key = self._room_key
        if room_key is None:
            return None
        psk = self._psks.get(self.relay_key)
        if psk is None:
            if len(self._psks) >= MAX_CACHED_KEYS:
                del self._psks[next(iter(self._psks))]
            psk = self._psks[self.relay_key] = room_key(self.relay_key)
        return psk

    def _start_join(self, cookie: bytes) -> None:
        """Noise message 1 for this cookie, in the JOIN sent until the relay answers."""
        self._cookie = cookie
        ephemeral = self._spare if self._spare is not None else Ephemeral(self._rng(DHLEN))
        self._spare = None  # never two handshakes with one ephemeral key
        datagram, initiator = hs.start_join(
            self.nonce,
            cookie,
            self.relay_key,
            self._psk(),
            ephemeral,
            self._join_nick,
            self._proven_resume(),
        )
        self._join_datagram = datagram
        self._initiators.append(initiator)

    def _proven_resume(self) -> wire.Resume | None:
        """``resume`` with the proof for this JOIN's nonce (protocol.md 4.2)."""
        resume = self._resume
        if resume is None or not self._resume_secret:
            return resume
        return replace(resume, proof=hs.resume_proof(self._resume_secret, self.nonce))

    # --- ACCEPT and REJECT --------------------------------------------------------------------

    def on_accept(
        self, accept: wire.Accept, now: float, last_srtt: float
    ) -> tuple[wire.AcceptPayload, SessionKeys, float | None] | None:
        """The payload, keys and an RTT hint for the new link, if ``accept`` answers one of
        our JOINs (counted and None otherwise). ``last_srtt`` (0: none) is the fallback hint
        when neither HELLO nor JOIN went once: the shell gives it only for the relay that
        link was with, never for another relay, whose path may be longer (a hint below the
        real round trip would have every packet resent before its ACK, and no sample taken)."""
        if accept.nonce != self.nonce:
            self._counters.wrong_session += 1
            return None
        opened = self._read_accept(accept)
        if opened is None:
            self._counters.malformed += 1  # not from the relay we encrypted to, or not ours
            return None
        payload, keys = opened
        hint = self._hello_rtt
        if hint is None and self._sends == 1:
            hint = now - self._sent_at
        if hint is None and last_srtt > 0:
            hint = last_srtt
        self._join_unanswered = False
        self._link_secret = hs.resume_secret(keys.send)
        self.retry_at = None
        return payload, keys, hint

    def _read_accept(self, accept: wire.Accept) -> tuple[wire.AcceptPayload, SessionKeys] | None:
        """The ACCEPT's payload and keys, from whichever of our handshakes it answers (the
        relay answers a retransmitted JOIN with the ACCEPT it made first)."""
        for initiator in reversed(self._initiators):
            try:
                return hs.finish_join(initiator, accept, self.keyed)
            except (NoiseError, wire.DecodeError):
                continue
        return None

    def on_busy(self, busy: wire.Busy, now: float) -> bool:
        """protocol.md 4.3: the relay will take our JOIN later. The same JOIN goes again
        after the wait it asks for, then on the schedule of an unmeasured path (250 ms
        doubling to 2 s, for the rest of the attempt: a relay pacing admissions answers late,
        and every JOIN that reaches it while it paces books a slot), and the attempt's
        deadline moves so that waiting as asked never ends the join. False if it is not
        ours."""
        if busy.nonce != self.nonce or self._cookie is None:
            self._counters.wrong_session += 1
            return False
        self.retry_at = now + min(busy.retry_ms, wire.MAX_BUSY_RETRY_MS) / 1000
        self._first_retry = self._retry_interval = HANDSHAKE_FIRST_RETRY
        until = self.retry_at + AFTER_BUSY
        if self.attempt_deadline is not None:
            self.attempt_deadline = max(self.attempt_deadline, until)
        if self.join_deadline is not None:
            self.join_deadline = max(self.join_deadline, until)
        return True

    def bound(self, reject: wire.Reject) -> bool:
        """protocol.md 4: whether ``reject`` answers what this attempt sent (our nonce, or
        the hash of one of our HELLO or JOIN datagrams). One that does not is kept, to be
        quoted if the join times out."""
        if reject.nonce in self._sent_hashes or reject.nonce == self.nonce:
            self._join_unanswered = False
            return True
        self._counters.wrong_session += 1
        self.unverified = reject.reason or f"refused with code {reject.code}"
        return False

    def suffixed_nick(self, nick: str) -> str | None:
        """``nick_``, ``nick__``, ... cut to fit MAX_NICK_LENGTH; None when out of room."""
        if self._suffix_base is None:
            self._suffix_base = nick
        self._suffix_count += 1
        count = self._suffix_count
        if count >= MAX_NICK_LENGTH:
            return None
        candidate = self._suffix_base[: MAX_NICK_LENGTH - count] + "_" * count
        return candidate if nick_error(candidate) is None else None

    # --- across links -------------------------------------------------------------------------

    def remember_resume(self, epoch: bytes, token: bytes, last_seq: int) -> None:
        """The link with ``token`` is gone: the next JOIN asks to resume it (protocol.md 4.2)."""
        self._resume = wire.Resume(epoch, token, last_seq)
        self._resume_secret = self._link_secret

    def resumes(self, token: bytes | None) -> bool:
        """Whether the resume the last JOIN carried named the session with ``token``."""
        return self._resume is not None and self._resume.token == token

    def welcomed(self) -> None:
        """WELCOME came: this attempt is over, and so is any nickname suffixing."""
        self.attempt_deadline = None
        self.join_deadline = None
        self._suffix_base = None
        self._suffix_count = 0


class Backoff:
    """protocol.md 7.1: when the next rejoin attempt starts, and how many there were."""

    __slots__ = ("_delay", "_max", "attempt", "due")

    def __init__(self, max_delay: float) -> None:
        self._max = max_delay
        self._delay = RECONNECT_FIRST_DELAY
        self.attempt = 0
        self.due: float | None = None

    def schedule(self, now: float, immediate: bool) -> float:
        """The next attempt, at once or after the current delay (which then doubles)."""
        self.attempt += 1
        delay = 0.0
        if not immediate:
            delay = min(self._delay, self._max)
            self._delay = min(self._delay * 2, self._max)
        self.due = now + delay
        return delay

    def reset(self) -> None:
        self.attempt = 0
        self._delay = RECONNECT_FIRST_DELAY
