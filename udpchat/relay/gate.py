"""The handshake gate: HELLO, CHALLENGE and JOIN, up to an admitted session (protocol.md 4).

Nothing here trusts a source address until it has echoed a cookie: the CHALLENGE is a
stateless HMAC cookie, answered to anyone without a per-source limit (it is a thirtieth of
the HELLO it answers), and the relay does DH work only for a JOIN whose cookie verifies.
Answers to datagrams that proved nothing (REJECT VERSION and BAD_KEY, stateless RESET) draw
on a per-host reply budget; JOINs with a valid cookie on a per-host join budget, which
spoofed datagrams can therefore never drain. Every REJECT is bound to its request (its
nonce, or the request's hash) so that a forged one is recognisable.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from udpchat import handshake as hs
from udpchat import wire
from udpchat.budget import ReceiveBudget
from udpchat.endpoint import Address
from udpchat.link import Link
from udpchat.names import nick_error, nick_key
from udpchat.netblock import address_key, host_key, prefix_key
from udpchat.noise import DHLEN, Ephemeral, NoiseError, public_key
from udpchat.ratelimit import BucketTable, TokenBucket
from udpchat.relay.cluster import Cluster
from udpchat.relay.config import RelayConfig, RelayStats
from udpchat.relay.events import MemberAdmitted
from udpchat.relay.outbox import Outbox
from udpchat.relay.room_log import KeptMember, RoomLog
from udpchat.relay.sessions import Dormant, Member, SessionTable
from udpchat.relay.shared_members import Moved
from udpchat.seal import PskDeriver

__all__ = [
    "COOKIE_MAC_SIZE", "COOKIE_TIME_SIZE", "MAX_USED_JOINS", "RELAY_LINK_TRANSMISSIONS",
    "RESET_SIZE", "WRONG_KEY", "Admission", "Gate",
]

# protocol.md 4: cookies carry 4 bytes of issue time (ms) and 16 bytes of HMAC.
COOKIE_TIME_SIZE = 4
COOKIE_MAC_SIZE = 16
# Used JOIN nonces remembered against replays; a full table forgets the oldest early.
MAX_USED_JOINS = 65_536
# protocol.md 7.1: on the relay a link never gives up by counting transmissions; the member
# timeout ends a silent session, so a client has that long to resume in place.
RELAY_LINK_TRANSMISSIONS = 1_000_000
RESET_SIZE = len(wire.encode_reset(bytes(wire.TOKEN_SIZE), bytes(wire.RESET_TOKEN_SIZE)))
# Seconds of rounding forgiven in the admission pace: ``_tat`` is a sum of many intervals,
# and the burst-th JOIN at one instant must not miss its place by a float's last bit.
ADMISSION_SLACK = 1e-9
# protocol.md 4: what BAD_KEY says when a JOIN's handshake does not authenticate.
WRONG_KEY = "wrong room key"


@dataclass(frozen=True, slots=True)
class Admission:
    """A JOIN that made a session: the room still has to welcome ``member``."""

    member: Member
    # the session a resume replaced (now forgotten): live, from before a restart, or on
    # another relay of a shared room (protocol.md 6.8)
    old: Member | Dormant | Moved | None
    resume: wire.Resume | None  # what the JOIN asked to resume from
    resumed: int  # messages the old session had delivered (WELCOME.resumed)


class Gate:
    def __init__(
        self,
        config: RelayConfig,
        stats: RelayStats,
        outbox: Outbox,
        sessions: SessionTable,
        log: RoomLog,
        rng: Callable[[int], bytes],
        secret: bytes,
        static_key: bytes,
        room_key: PskDeriver | None,
        receive_budget: ReceiveBudget,
        now: float,
    ) -> None:
        if len(static_key) != DHLEN:
            raise ValueError(f"a static key has {DHLEN} bytes, not {len(static_key)}")
        self.config = config
        self.stats = stats
        self.outbox = outbox
        self.sessions = sessions
        self.log = log
        self._rng = rng
        self._secret = secret
        self._static_key = static_key
        self.relay_key = public_key(static_key)
        self._reset_secret = hs.reset_secret(static_key)
        # protocol.md 8: the psk is salted with the relay's public key; derived once, here.
        self._psk = room_key(self.relay_key) if room_key is not None else None
        self._link_config = replace(config.link, max_retransmissions=RELAY_LINK_TRANSMISSIONS)
        self._receive_budget = receive_budget
        self.join_buckets = BucketTable(
            config.handshake_rate, config.handshake_burst, config.max_sources, now
        )
        self.reply_buckets = BucketTable(
            config.reply_rate, config.reply_burst, config.max_sources, now
        )
        self._used_joins: dict[tuple[Address, bytes], float] = {}
        # protocol.md 4.3: admissions paced relay-wide (GCRA). ``_tat`` is when the next
        # admission is due at the steady rate; up to ``admission_burst`` may come early.
        # ``_booked`` is the end of the slots already promised in BUSY answers, so that a
        # crowd told to wait is spread over later slots instead of coming back at once.
        self._admit_interval = 1.0 / config.admission_rate
        self._admit_tolerance = (config.admission_burst - 1) * self._admit_interval
        self._tat = now
        self._booked = now
        self.cluster: Cluster | None = None  # protocol.md 6.8: set for a shared log
        # The next ACCEPT's ephemeral key, made between joins (``prepare``): its public half
        # costs as much as a DH, which a joiner would otherwise wait for.
        self.spare: Ephemeral | None = Ephemeral(rng(DHLEN))

    def prepare(self) -> None:
        """Make the next ACCEPT's ephemeral key, once the last one's ACCEPT has gone."""
        if self.spare is None:
            self.spare = Ephemeral(self._rng(DHLEN))

    # --- answers that prove nothing ---------------------------------------------------------

    def refuse(
        self,
        data: bytes,
        code: wire.RejectCode,
        reason: str,
        addr: Address,
        now: float,
        version: int = wire.PROTOCOL_VERSION,
    ) -> None:
        """Answer a datagram of another version, or a JOIN whose handshake does not
        authenticate, with a REJECT bound to it (protocol.md 4): its nonce is the datagram's
        hash, which only whoever sent or saw the datagram knows. Only datagrams of handshake
        size get one, within the per-host reply budget, so that no answer is larger than its
        request and a flood of junk draws only a trickle."""
        if len(data) < wire.MIN_INITIAL_SIZE or not self.allow_reply(addr, now):
            return
        self.stats.rejects += 1
        reject = wire.encode_reject(wire.request_hash(data), code, reason, version)
        self.outbox.send(reject, addr)

    def reset(self, token: bytes, size: int, addr: Address, now: float) -> None:
        """protocol.md 7.2: a stateless reset for a session this relay does not know,
        provable by this identity only, to datagrams no smaller than it."""
        if size >= RESET_SIZE and self.allow_reply(addr, now):
            self.stats.resets += 1
            proof = hs.reset_token(self._reset_secret, token)
            self.outbox.send(wire.encode_reset(token, proof), addr)

    def allow_reply(self, addr: Address, now: float) -> bool:
        """May we answer a datagram that proved nothing about its source (a RESET, a VERSION
        or BAD_KEY reject)? None is larger than what it answers; the budget per host only
        stops the relay from being a steady reflector."""
        if self.reply_buckets.take(host_key(addr[0]), now):
            return True
        self.stats.rate_limited += 1
        return False

    def _allow_join(self, addr: Address, now: float) -> bool:
        """A JOIN with a valid cookie: its source proved it receives our datagrams, so
        spoofed datagrams can never drain the bucket its host's own JOINs need."""
        if self.join_buckets.take(host_key(addr[0]), now):
            return True
        self.stats.rate_limited += 1
        return False

    def _admission_wait(self, now: float) -> float:
        """0.0 when a JOIN may go on now (the caller counts its admission once the host's
        bucket allows it), otherwise the seconds until the slot promised to it (4.3)."""
        tat = max(self._tat, now)
        earliest = tat - self._admit_tolerance
        if earliest <= now + ADMISSION_SLACK:
            return 0.0
        slot = max(self._booked, earliest)
        if slot - now > wire.MAX_BUSY_RETRY_MS / 1000:
            return slot - now  # beyond what a BUSY may ask: book it when it comes back
        self._booked = slot + self._admit_interval
        return slot - now

    # --- cookies ----------------------------------------------------------------------------

    def _cookie(self, nonce: bytes, addr: Address, issued_ms: int) -> bytes:
        issued = issued_ms.to_bytes(COOKIE_TIME_SIZE, "big")
        mac = hmac.new(
            self._secret, issued + nonce + f"{addr[0]}|{addr[1]}".encode(), hashlib.sha256
        ).digest()
        return issued + mac[:COOKIE_MAC_SIZE]

    def issue_cookie(self, nonce: bytes, addr: Address, now: float) -> bytes:
        return self._cookie(nonce, addr, int(now * 1000) & 0xFFFFFFFF)

    def _cookie_age(self, cookie: bytes, nonce: bytes, addr: Address, now: float) -> float | None:
        """Seconds since the cookie was issued to ``addr``, or None if it is not ours."""
        if len(cookie) != COOKIE_TIME_SIZE + COOKIE_MAC_SIZE:
            return None
        issued_ms = int.from_bytes(cookie[:COOKIE_TIME_SIZE], "big")
        if not hmac.compare_digest(self._cookie(nonce, addr, issued_ms), cookie):
            return None
        age = ((int(now * 1000) - issued_ms) & 0xFFFFFFFF) / 1000
        return age if age <= self.config.cookie_lifetime else None

    # --- HELLO and JOIN -----------------------------------------------------------------------

    def on_hello(self, hello: wire.Hello, addr: Address, now: float) -> None:
        # No limit per source: a CHALLENGE is a thirtieth of the HELLO it answers and costs
        # one HMAC, so answering spoofed HELLOs harms nobody, and limiting them would let a
        # spoofer lock a victim's address out of the room.
        self.stats.handshakes += 1
        self._challenge(hello.nonce, addr, now)

    def _challenge(self, nonce: bytes, addr: Address, now: float) -> None:
        """CHALLENGE: the cookie, the relay's static public key (the client checks it and
        encrypts its JOIN to it), and whether the room needs a key."""
        cookie = self.issue_cookie(nonce, addr, now)
        keyed = self._psk is not None
        self.outbox.send(wire.encode_challenge(nonce, cookie, self.relay_key, keyed), addr)

    def _reject(self, nonce: bytes, code: wire.RejectCode, reason: str, addr: Address) -> None:
        self.stats.rejects += 1
        self.outbox.send(wire.encode_reject(nonce, code, reason), addr)

    def on_join(
        self, join: wire.Join, data: bytes, addr: Address, now: float, closing: bool
    ) -> Admission | None:
        """A JOIN; an ``Admission`` if it made a session. ``closing``: the relay is
        shutting down and admits nobody."""
        age = self._cookie_age(join.cookie, join.nonce, addr, now)
        if age is None:
            self.stats.bad_cookies += 1  # answered like a HELLO, for the same reasons
            self._challenge(join.nonce, addr, now)
            return None
        pending = self.sessions.by_join.get((addr, join.nonce))
        if pending is not None:  # our ACCEPT was lost: say it again, never a new handshake
            self.outbox.send(pending.accept, addr)
            return None
        used_until = self._used_joins.get((addr, join.nonce))
        if used_until is not None and now < used_until:
            # A JOIN that already made a session, replayed within its cookie's lifetime.
            self.stats.replayed_joins += 1
            self.outbox.drop("replayed JOIN", addr)
            return None
        wait = self._admission_wait(now)
        if wait > 0.0:
            # Before the host's bucket and any DH work: waiting costs the joiner nothing.
            self.stats.busy += 1
            retry_ms = min(wire.MAX_BUSY_RETRY_MS, max(1, math.ceil(wait * 1000)))
            self.outbox.send(wire.encode_busy(join.nonce, retry_ms), addr)
            return None
        if not self._allow_join(addr, now):
            self._reject(
                join.nonce,
                wire.RejectCode.TOO_MANY_ATTEMPTS,
                "too many join attempts from this address; try again later",
                addr,
            )
            return None
        # Counted only now: a host can use the relay's admissions no faster than its own
        # bucket allows, so one host cannot keep everyone else waiting.
        self._tat = max(self._tat, now) + self._admit_interval
        # protocol.md 4: the DH work, only now that the cookie has proved the address.
        try:
            responder, request = hs.read_join(self._static_key, join, self._psk)
        except NoiseError:
            self.stats.bad_key += 1
            self.outbox.drop("JOIN handshake does not authenticate: wrong room key", addr)
            self.refuse(data, wire.RejectCode.BAD_KEY, WRONG_KEY, addr, now)
            return None
        except wire.DecodeError as exc:
            self.stats.malformed += 1
            self.outbox.drop(f"malformed JOIN payload: {exc}", addr)
            return None
        if closing:
            self._reject(
                join.nonce, wire.RejectCode.SHUTTING_DOWN, "the relay is shutting down", addr
            )
            return None
        problem = nick_error(request.nick)
        if problem is not None:
            self._reject(join.nonce, wire.RejectCode.NICK_INVALID, problem, addr)
            return None
        old = self._resumed_session(join.nonce, request.resume)
        key = nick_key(request.nick)
        holder = self.sessions.holder(key)
        if holder is not None and holder is not old:
            reason = f"the nickname {request.nick} is taken"
            if isinstance(holder, Dormant):
                # protocol.md 6.6: kept for its member across the relay's restart. Most often
                # that is the user asking, from a client that was restarted too and lost its
                # session: say how long the wait is.
                wait = max(1, math.ceil(holder.expires - now))
                reason = (
                    f"the nickname {request.nick} is kept for its member, who may come back"
                    f" after the relay's restart: free in {wait} s unless they do"
                )
            self._reject(join.nonce, wire.RejectCode.NICK_TAKEN, reason, addr)
            return None
        new_here = old is None or isinstance(old, Moved)
        if new_here and len(self.sessions.members) >= self.config.max_members:
            self._reject(join.nonce, wire.RejectCode.RELAY_FULL, "the relay is full", addr)
            return None
        crowd = self._crowding(addr, old if isinstance(old, Member) else None)
        if crowd is not None:
            self.stats.network_full += 1
            self._reject(join.nonce, wire.RejectCode.RELAY_FULL, crowd, addr)
            return None
        return self._admit(join.nonce, request, responder, key, addr, old, age, now)

    def _resumed_session(
        self, nonce: bytes, resume: wire.Resume | None
    ) -> Member | Dormant | Moved | None:
        """The session a JOIN resumes, if it proves it holds that session's keys: a live
        one, one from before a restart (protocol.md 6.6), or one of another relay of a
        shared room (6.8)."""
        if resume is None or resume.epoch != self.log.epoch:
            return None
        candidate: Member | Dormant | Moved | None = self.sessions.members.get(resume.token)
        if candidate is None:
            candidate = self.sessions.dormant.get(resume.token)
        if candidate is None and self.cluster is not None:
            candidate = self.cluster.find(resume.token)
        # protocol.md 4.2: the token and epoch are no secret on the path; only the holder of
        # the old session's keys can make the proof.
        if candidate is not None and hmac.compare_digest(
            hs.resume_proof(candidate.resume_secret, nonce), resume.proof
        ):
            return candidate
        return None

    def _crowding(self, addr: Address, old: Member | None) -> str | None:
        """Why ``addr``'s host or network may not have one more member, or None."""
        host, network = address_key(addr[0]), prefix_key(addr[0])
        old_host = old_network = None
        if old is not None:
            old_host, old_network = address_key(old.addr[0]), prefix_key(old.addr[0])
        hosted = self.sessions.per_host.get(host, 0) - (old_host == host)
        if hosted >= self.config.max_members_per_host:
            return f"the room is full for your address ({self.config.max_members_per_host} members)"
        networked = self.sessions.per_network.get(network, 0) - (old_network == network)
        if networked >= self.config.max_members_per_network:
            return (
                f"the room is full for your network ({self.config.max_members_per_network} members)"
            )
        return None

    def _admit(
        self,
        nonce: bytes,
        join: wire.JoinPayload,
        responder: hs.Responder,
        key: str,
        addr: Address,
        old: Member | Dormant | Moved | None,
        rtt: float,
        now: float,
    ) -> Admission | None:
        sessions = self.sessions
        token = self._rng(wire.TOKEN_SIZE)
        while token in sessions.members:
            token = self._rng(wire.TOKEN_SIZE)
        if self.cluster is not None:  # protocol.md 6.8: the nickname is held room-wide
            refusal = self.cluster.claim_for(join.nick, token, old)
            if refusal is not None:
                self._reject(nonce, *refusal, addr)
                return None
        ephemeral = self.spare if self.spare is not None else Ephemeral(self._rng(DHLEN))
        self.spare = None  # never two handshakes with one ephemeral key
        accept, keys = hs.accept(
            responder,
            nonce,
            token,
            wire.AcceptPayload(
                self.log.epoch,
                int(self.config.heartbeat * 1000),
                int(self.config.timeout * 1000),
                hs.reset_token(self._reset_secret, token),
            ),
            ephemeral,
            padded=self._psk is not None,
        )
        resumed = 0
        bucket = None
        if isinstance(old, Member):
            resumed = old.link.stats.messages_delivered
            bucket = old.bucket
            sessions.forget(old)
        elif isinstance(old, Dormant):  # its stream was lost with the old process
            sessions.wake(old)
        if old is not None and self.cluster is None:
            self.log.forget_member(old.token)
        config = self.config
        member = Member(
            token=token,
            nick=join.nick,
            key=key,
            addr=addr,
            link=Link(
                token,
                self._link_config,
                rtt_hint=max(rtt, 0.0001),
                keys=keys,
                budget=self._receive_budget,
            ),
            last_heard=now,
            # a resume is the same person: it keeps its flood bucket (protocol.md 4.2, 6.5)
            bucket=bucket
            if bucket is not None
            else TokenBucket(config.flood_rate, config.flood_burst, updated=now),
            join=(addr, nonce),
            accept=accept,
            resume_secret=hs.resume_secret(keys.receive),
        )
        sessions.add(member)
        kept = KeptMember(token, member.nick, member.resume_secret)
        if self.cluster is not None:
            self.cluster.admitted(old, kept)
        else:
            self.log.keep_member(kept)
        self._remember_join((addr, nonce), now)
        self.outbox.send(accept, addr)
        self.outbox.report(MemberAdmitted(join.nick, addr, old is not None))
        return Admission(member, old, join.resume, resumed)

    def _remember_join(self, key: tuple[Address, bytes], now: float) -> None:
        """Keep used (address, nonce) pairs for as long as their cookie could be valid."""
        used = self._used_joins
        while used:
            oldest = next(iter(used))
            if used[oldest] > now and len(used) < MAX_USED_JOINS:
                break
            del used[oldest]
        used[key] = now + self.config.cookie_lifetime
