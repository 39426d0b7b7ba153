"""The hybrid Lamport clock that orders every write in a room.

A value is a Lamport timestamp whose floor is the wall time in milliseconds: `tick(now)` returns
`max(last + 1, now_ms)`, `observe(value)` moves `last` forward. Order and convergence come from the
Lamport rule alone; the wall-time floor exists for one reason, the bound on values from the future.

Why a wall-time floor: a peer that sends a huge Lamport value would win its bytes forever (and a value
at the top of the range can never be beaten). Values must therefore be bounded, and the bound must be
the same on every replica, or one replica would accept a write that another refuses and they would
diverge. A bound relative to "what this replica has seen" fails that test and also refuses an honest
peer returning with old durable state (it has seen little, the room has moved on). A bound relative to
the receiver's wall clock has neither problem: every replica computes `now_ms + MAX_AHEAD_MS` to within
its clock error, an old durable state only holds *smaller* values, and a fresh replica accepts the room's
values because they are all in the past. Values beyond the bound are rejected, not clamped (clamping
would make replicas disagree about the stamp and therefore about the winner).

The cost: a player whose clock runs more than `MAX_AHEAD_MS` fast has their writes refused everywhere.
Heartbeats carry wall time so the peer can tell such a player why (see `replica.PeerStatistics.skew`).
"""

from __future__ import annotations

MAX_AHEAD_MS = 10 * 60 * 1000
MAX_LAMPORT = 2**63 - 1


def wall_ms(now: float) -> int:
    return int(now * 1000)


def is_too_far_ahead(value: int, now: float) -> bool:
    """True when a received Lamport value lies beyond what any honest clock can have produced yet."""
    return value > wall_ms(now) + MAX_AHEAD_MS


class HybridClock:
    """Lamport clock with a wall-time floor; `now` is seconds since the Unix epoch, passed in."""

    def __init__(self, last: int = 0) -> None:
        if not 0 <= last <= MAX_LAMPORT:
            raise ValueError(f"clock value {last} is out of range")
        self.last = last

    def tick(self, now: float) -> int:
        self.last = max(self.last + 1, wall_ms(now))
        return self.last

    def observe(self, value: int) -> None:
        if value > self.last:
            self.last = value
