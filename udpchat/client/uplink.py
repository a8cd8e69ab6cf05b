"""The current link to the relay: adoption, retirement, authentication, liveness.

An ``Uplink`` holds at most one ``Link`` (the one the last ACCEPT created) with what that
ACCEPT said: the relay incarnation (epoch), the stateless-reset token and the heartbeat. It
opens session datagrams before anything else looks at them (protocol.md 8), answers
PATH_CHALLENGE, checks RESETs (protocol.md 7.2), and keeps the heartbeat clocks
(protocol.md 7.1): a heartbeat after ``heartbeat`` without sending (a bare ACK while the
round trip is measured and the relay was heard recently enough, else a PING, which the relay
answers); after ``ask_after`` without hearing, a probe every quarter of a heartbeat; after
``silence`` without hearing, the relay is lost. ``silence`` always outlasts two heartbeats,
whatever the relay asked for (``silence_for``). The counts of a retired link are kept, so
/stats never goes backwards.
"""

from __future__ import annotations

import hmac
from dataclasses import replace

from udpchat import wire
from udpchat.client.config import ClientStats, Counters
from udpchat.link import Link, LinkConfig, LinkStats
from udpchat.seal import SessionKeys

__all__ = [
    "MIN_HEARTBEAT", "MIN_PROBING", "QUIET_SPELL", "Uplink", "ask_after", "silence_for",
    "wants_answer",
]

# A relay may announce any heartbeat up to an hour; below this we would only flood it.
MIN_HEARTBEAT = 0.05
# Data after a silence of more than this many ACK delays is acknowledged at once.
QUIET_SPELL = 3.0


# protocol.md 7.1: the least time left for probes before the silence ends, however short
# the heartbeat.
MIN_PROBING = 2.5


def silence_for(relay_silence: float, heartbeat: float) -> float:
    """How long without hearing from the relay before it is lost (protocol.md 7.1): the
    client's ``relay_silence``, but never less than two of the heartbeats it asked for."""
    return max(relay_silence, 2 * heartbeat)


def ask_after(heartbeat: float, silence: float) -> float:
    """How long without hearing from the relay before the client probes (protocol.md 7.1):
    early enough to leave two and a half heartbeats, and at least MIN_PROBING, of probing
    before ``silence``; never sooner than one heartbeat. With the defaults (1 s, 5 s) the
    relay answers every other heartbeat; with a fail-over's 2 s silence, every one."""
    return max(heartbeat, silence - max(2.5 * heartbeat, MIN_PROBING))


def wants_answer(
    now: float, heartbeat: float, srtt: float, last_heard: float, ask: float
) -> bool:
    """Whether the heartbeat due at ``now`` must be a PING (protocol.md 7.1): the answer to
    the next one, a round trip after it, would not come a quarter heartbeat before probing
    begins (``last_heard + ask``, ``ask`` from ``ask_after``)."""
    return now + 1.25 * heartbeat + srtt >= last_heard + ask


class Uplink:
    """The current link, what its ACCEPT said, and its heartbeat clocks."""

    def __init__(self, counters: Counters, relay_silence: float, now: float) -> None:
        self._counters = counters
        self._relay_silence = relay_silence
        self.link: Link | None = None
        self.epoch = b""
        self._reset_token = b""  # protocol.md 7.2: proves a RESET for the current session
        self.out: list[bytes] = []  # datagrams outside the link's queue (PATH_RESPONSE, ACK)
        self._heartbeat = 1.0
        self._silence = relay_silence
        self._ask_after = ask_after(1.0, relay_silence)
        self._rtt_measured = False  # the link's RTT estimate rests on a measurement
        self.last_sent = now
        self._last_heard = now
        self._last_ping = now
        self._last_data = float("-inf")  # when data last came (``_ack_lone_data``)
        self.last_stats = LinkStats()  # of the link retired last
        # The retired link's smoothed RTT, when it rested on a measurement: where the next
        # handshake starts its retransmission timer (``joining.first_retry``).
        self.last_rtt: float | None = None

    def adopt(
        self,
        token: bytes,
        config: LinkConfig,
        hint: float | None,
        keys: SessionKeys,
        payload: wire.AcceptPayload,
        now: float,
    ) -> None:
        """A new link for an ACCEPT with ``payload``; the old one, if any, is retired."""
        self.retire()
        self.link = Link(token, config, rtt_hint=hint, keys=keys)
        self.epoch = payload.epoch
        self._reset_token = payload.reset_token
        self._heartbeat = max(payload.heartbeat_ms / 1000, MIN_HEARTBEAT)
        self._silence = silence_for(self._relay_silence, self._heartbeat)
        self._ask_after = ask_after(self._heartbeat, self._silence)
        self._rtt_measured = hint is not None
        self.last_sent = self._last_heard = self._last_ping = now

    def retire(self) -> None:
        old = self.link
        if old is not None:
            self._counters.retired_replays += old.stats.replays
            self._counters.retired_invalid += old.stats.invalid
            self.last_stats = old.stats
            measured = self._rtt_measured or old.rtt.samples > 0
            self.last_rtt = old.rtt.srtt if measured else None
            self.link = None

    def stats(self) -> ClientStats:
        c = self._counters
        link = self.link
        current = link.stats if link is not None else self.last_stats
        return ClientStats(
            malformed=c.malformed + c.retired_invalid + current.invalid,
            wrong_session=c.wrong_session,
            replays=c.retired_replays + current.replays,
            unexpected=c.unexpected,
            bad_messages=c.bad_messages,
            reconnects=c.reconnects,
            link=replace(current),
            foreign=c.foreign,
            moves=c.moves,
        )

    # --- receiving ----------------------------------------------------------------------------

    def reset_is_ours(self, reset: wire.Reset) -> bool:
        """protocol.md 7.2: a RESET counts only with the reset token of our ACCEPT, which only
        the relay's identity can compute; anyone can copy a token off the wire."""
        link = self.link
        if link is None or reset.token != link.token:
            self._counters.wrong_session += 1
            return False
        if not hmac.compare_digest(reset.reset_token, self._reset_token):
            self._counters.malformed += 1
            return False
        return True

    def receive(self, envelope: wire.Protected, size: int, now: float) -> list[bytes] | None:
        """The stream data ``envelope`` delivers, None if it is not an authentic datagram of
        the current link (counted, here or by the link)."""
        link = self.link
        if link is None or envelope.token != link.token:
            self._counters.wrong_session += 1
            return None
        datagram = link.open(envelope)  # protocol.md 8: authenticated before anything else
        if datagram is None:
            return None  # the link counted it
        delivered = link.receive(datagram, now)
        if delivered is None:
            return None  # a replay or impossible ACK fields: the link counted it
        link.count_received(size)
        self._last_heard = now
        if delivered:
            self._ack_lone_data(link, now)
        if isinstance(datagram, wire.PathChallenge):
            self.out.append(link.encode_path(wire.PathResponse, datagram.data))
        return delivered

    def _ack_lone_data(self, link: Link, now: float) -> None:
        """Data that came alone is acknowledged now rather than ACK_DELAY later.

        The delay exists to cover a second packet with the same ACK. After a quiet spell of
        more than QUIET_SPELL delays, the data is not part of a stream dense enough for that
        (packets that far apart get an ACK each anyway: the timer fires between them), and
        the held-back ACK would only cost a wake-up of its own a moment later to send the
        same one datagram (protocol.md 5.3 sets the longest an ACK may wait, not the
        shortest). A lazy ACK (due later than ACK_DELAY) is left to wait for company."""
        delay = link.config.ack_delay
        quiet = now - self._last_data > QUIET_SPELL * delay
        self._last_data = now
        deadline = link.ack_deadline
        if quiet and deadline is not None and deadline <= now + delay:
            link.acknowledge_now()

    # --- liveness -----------------------------------------------------------------------------

    @property
    def last_heard(self) -> float:
        """When an authentic datagram of the relay last came (or the link was adopted)."""
        return self._last_heard

    @property
    def silent_at(self) -> float:
        """When the relay counts as lost unless something is heard before."""
        return self._last_heard + self._silence

    def ping_due(self) -> float:
        """When the next PING or probe is due."""
        beat = self._heartbeat
        quiet = max(self.last_sent, self._last_ping) + beat
        probe = max(self._last_heard + self._ask_after, self._last_ping + beat / 4)
        return min(quiet, probe)

    def wake_at(self) -> float:
        """``min(ping_due(), silent_at)``, without the calls: read after every datagram."""
        beat = self._heartbeat
        last_ping, last_heard = self._last_ping, self._last_heard
        quiet = (self.last_sent if self.last_sent > last_ping else last_ping) + beat
        probe = last_heard + self._ask_after
        if last_ping + beat / 4 > probe:
            probe = last_ping + beat / 4
        first = quiet if quiet < probe else probe
        silent = last_heard + self._silence
        return silent if silent < first else first

    def ping(self, link: Link, now: float) -> None:
        """The heartbeat or probe due at ``now``: a PING unless the round trip is known
        and the answer to the next heartbeat would still come before probing begins, with
        a quarter of a heartbeat to spare. Until then any datagram is a sign of life to the
        relay (protocol.md 7.1), and a bare ACK asks for no answer."""
        rtt = link.rtt
        known = self._rtt_measured or rtt.samples > 0
        if not known or wants_answer(
            now, self._heartbeat, rtt.srtt, self._last_heard, self._ask_after
        ):
            link.ping()
            self._last_ping = now
        else:
            link.acknowledge_now()
