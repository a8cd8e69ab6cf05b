"""Round-trip time estimation and the retransmission timeout (RFC 6298, with RFC 9002's
addition of the peer's maximum ACK delay).

Kept apart from the link so that its arithmetic can be checked against the RFC on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["K_ALPHA", "K_BETA", "K_GRANULARITY", "K_RTO_VARIANCE", "RttEstimator"]

# RFC 6298 section 2: alpha = 1/8, beta = 1/4, K = 4, G = clock granularity.
K_ALPHA = 1 / 8
K_BETA = 1 / 4
K_RTO_VARIANCE = 4
K_GRANULARITY = 0.001


@dataclass(slots=True)
class RttEstimator:
    """Smoothed RTT and RTT variance; ``rto`` is what a new transmission waits for its ACK.

    ``max_ack_delay`` is the longest a peer may hold an ACK back (protocol.md "Timers"); like
    QUIC's PTO it is added so that a delayed ACK never looks like a loss.
    """

    initial_rtt: float = 0.1
    min_rto: float = 0.004
    max_rto: float = 1.0
    max_ack_delay: float = 0.001
    # The starting estimate is ``initial_rtt`` assumed, not a handshake's measurement: a
    # timeout before the first sample may prove it too short (``back_off``).
    assumed: bool = True
    srtt: float = field(init=False)
    rttvar: float = field(init=False)
    latest_rtt: float = field(init=False)
    min_rtt: float | None = field(default=None, init=False)
    samples: int = field(default=0, init=False)
    rto: float = field(default=0.0, init=False)  # kept current: read on every transmission

    def __post_init__(self) -> None:
        if not 0 < self.min_rto <= self.max_rto:
            raise ValueError("need 0 < min_rto <= max_rto")
        if self.initial_rtt <= 0:
            raise ValueError("initial_rtt must be positive")
        # Before the first sample, RFC 6298 2.1 uses a conservative initial RTO; we derive it
        # from an assumed RTT the same way the first sample would (SRTT = R, RTTVAR = R/2).
        self.srtt = self.initial_rtt
        self.rttvar = self.initial_rtt / 2
        self.latest_rtt = self.initial_rtt
        self._update_rto()

    def on_sample(self, rtt: float) -> None:
        """Fold in one RTT measurement from a packet that was sent exactly once (Karn)."""
        if rtt < 0.0:
            rtt = 0.0
        self.latest_rtt = rtt
        if self.min_rtt is None or rtt < self.min_rtt:
            self.min_rtt = rtt
        if self.samples == 0:
            # RFC 6298 2.2
            self.srtt = rtt
            self.rttvar = rtt / 2
        else:
            # RFC 6298 2.3: RTTVAR first, using the old SRTT.
            srtt = self.srtt
            self.rttvar = (1 - K_BETA) * self.rttvar + K_BETA * abs(srtt - rtt)
            self.srtt = (1 - K_ALPHA) * srtt + K_ALPHA * rtt
        self.samples += 1
        self._update_rto()

    def back_off(self, factor: float) -> None:
        """A packet's first retransmission timeout while the estimate is still the assumed
        initial RTT: it may be shorter than the path's round trip. The estimate grows by
        ``factor`` for every packet sent after, as Karn's algorithm keeps a backed-off RTO
        until a valid sample (RFC 6298 5.5 and the note closing its section 5): an ACK of a
        packet sent twice gives no sample, so an estimate below the real round trip would
        have every packet resent before its ACK and never be corrected. It stops growing
        once the RTO reaches ``max_rto``; the first sample replaces it."""
        if self.assumed and self.samples == 0 and self.rto < self.max_rto:
            self.srtt *= factor
            self.rttvar *= factor
            self._update_rto()

    def _update_rto(self) -> None:
        """RFC 6298 2.3 ``SRTT + max(G, K*RTTVAR)`` plus the peer's ACK delay, clamped."""
        variance = K_RTO_VARIANCE * self.rttvar
        base = self.srtt + (variance if variance > K_GRANULARITY else K_GRANULARITY)
        base += self.max_ack_delay
        self.rto = min(max(base, self.min_rto), self.max_rto)

    def loss_delay(self) -> float:
        """RFC 9002 6.1.2: how long after a later packet's ACK an earlier one counts as lost."""
        return max(9 / 8 * max(self.srtt, self.latest_rtt), K_GRANULARITY)
