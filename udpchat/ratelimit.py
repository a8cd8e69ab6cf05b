"""A token bucket: a burst allowance refilled at a steady rate (flood and handshake limits)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BucketTable", "TokenBucket"]


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # bucket size
    updated: float  # the ``now`` of the last refill
    tokens: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        if self.tokens < 0:
            self.tokens = self.burst

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are enough; refill first."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= cost - 1e-9:  # float refills land a hair short of a whole token
            self.tokens = max(self.tokens - cost, 0.0)
            return True
        return False


class BucketTable:
    """Token buckets per key (a source address or network), bounded in entries.

    A bucket that is not full still remembers spending, so it is never forgotten: forgetting
    it would hand its owner a fresh burst (flood the table with new keys, then come back).
    When the table is full and its least recently used bucket has not refilled either, new
    keys share one overflow bucket until room is made.
    """

    __slots__ = ("_buckets", "_overflow", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, max_keys: int, now: float) -> None:
        if max_keys < 1:
            raise ValueError("a bucket table needs room for at least one key")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}  # least recently used first
        self._overflow = TokenBucket(rate, burst, updated=now)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> bool:
        """Spend one token of ``key``'s bucket (or the overflow bucket) if there is one."""
        buckets = self._buckets
        bucket = buckets.pop(key, None)
        if bucket is None:
            if len(buckets) >= self.max_keys:
                oldest_key = next(iter(buckets))
                oldest = buckets[oldest_key]
                if oldest.tokens + (now - oldest.updated) * oldest.rate < oldest.burst:
                    return self._overflow.take(now)
                del buckets[oldest_key]
            bucket = TokenBucket(self.rate, self.burst, updated=now)
        buckets[key] = bucket
        return bucket.take(now)
