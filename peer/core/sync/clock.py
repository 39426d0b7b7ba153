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

How far ahead, and what happens just past it (issue 18, F1). The bound is also what a malicious
member can push the room's clock to: it stamps at a receiver's bound, every honest replica that
merges the write stamps its next writes above it, and those stamps stay that far ahead of real
time. Ten minutes (the first choice) let it do that by ten minutes, and it split the room: with
honest clocks 20 ms apart, the fast replica's writes (stamped just past its own bound) were past
the slower replica's bound and refused. So:
- `MAX_AHEAD_MS` is 60 s. Clock skew between players' machines is what it must cover: the skews
  our peers measure from heartbeats (`PeerStatistics.skew`) are tens of milliseconds between
  machines synchronised by NTP (every desktop OS does so by default), and seconds for a machine
  that has not synchronised for days (a PC clock drifts by up to ~1 s a day); a minute covers
  a week of drift with room to spare, and caps what a liar can inflate the room's clock by.
- A value past the bound is held (`hold_or_refuse`), not refused, only as far as the clock of
  its sender or author, as their heartbeats show it, explains, plus `HOLD_MS` (1 s: a measured
  skew is short of the true one by the heartbeat's transit, and chained writes add a few ms);
  it is merged once this replica's clock catches up. Why hold at all (issue 30, F7): a member
  pins the bound of the fastest replica F (stamps at F's wall + `MAX_AHEAD_MS`); F merges it,
  and F's next write to that byte must beat it, so it is stamped `s` past the bound of a
  replica S whose clock is `s` slower. S holds it for `s` (S measured F's skew), so F's write is
  late at S by the skew and never refused: with a 12 s skew, 0 of 80 such writes got through
  before, each counted against the honest F. Why no more (the review of F7): a held value is
  merged late and beats the writes S made to those bytes meanwhile, writes that never saw it.
  A hold as long as the bound let a member stamp wall + 119 s and roll back 58 s of honest
  writes. Now a member whose heartbeats show its real clock rolls back at most `HOLD_MS`; one
  that claims a clock `s` fast gets `s` more, and every player is told its clock is off from
  `CLOCK_WARN_S` on. Beyond the allowance a value is refused and counted. Holding costs at most
  `HELD_PER_PEER` batches per peer (`replica`).
- And the pin reaches only what it overwrites (issue 30, F7): a local write must beat the
  values it overwrites, whatever their stamps (`stamp(..., floor=)`: the highest stamp on the
  bytes and counter slots it writes), but follows the stamps of other bytes only up to
  `CROSS_BYTE_MS` past its own wall time. So under a pin, F's writes to other bytes are stamped
  at most F's wall + 10 s, within S's bound for skews up to 50 s (held by the rest beyond), and
  honest writes to the bytes the liar writes are late at slower replicas by the skew.
- A sender's own write stamped past its own clock's bound (its clock as its heartbeats show it)
  is that sender's fault, since an honest replica holds such values rather than merging them and
  so never stamps above its own bound: it counts against the sender (`replica.SENDER_SLACK_MS`),
  though it is still merged when within ours, so that every replica decides the same way.

A write is stamped for when the game made it, not for when this process got round to it
(`stamp(written_at, now)`). A peer whose process stalls (a closed laptop lid, swapping, a debugger)
while its emulator plays on reads those writes late; stamped "now" they would beat newer writes by
other players. So a local write's value, with `seen = max(own last, seen by then)` and `w` the
wall time of `written_at` in ms, is `max(min(seen, max(floor, w + CROSS_BYTE_MS)) + 1, w)`:
- `own last` keeps this writer's own writes in the order the game made them;
- `seen by then + 1` keeps causality: a write made after this replica saw a value (that value may
  already be in the emulator, or have caused what the game wrote elsewhere) must beat it; values
  first seen after `written_at` cannot have caused it, so they do not count, and a later write by
  another player wins;
- causality across bytes (A writes X; B sees it and writes Y; C sees Y and writes X: C's X must
  beat A's) needs the stamps of every byte, not only of X; the cap `w + CROSS_BYTE_MS` keeps it
  for clocks up to 10 s apart (the review's case, A 1 s fast, lost C's write), and keeps a pinned
  stamp from lifting other bytes past other replicas' bounds (see the pin above). Clocks farther
  apart than the cap are told so well before (5 s); they keep the order per byte, not across;
- `floor`, the highest stamp on what the write overwrites, is always beaten when causality says
  so, cap or not (last-writer-wins per byte needs nothing more); None (`tick`) caps nothing;
- `w` is the wall-time floor, as for any tick.
What was seen when is kept for `SEEN_HISTORY_S`; anything older is folded into one floor, so a
stall longer than that stamps as if the write was made when the history begins (never lower than
causality allows, only less fair); so does a wall clock that stepped back.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

MAX_AHEAD_MS = 60 * 1000
HOLD_MS = 1000  # held past the bound beyond what the sender's or author's clock explains
CROSS_BYTE_MS = 10 * 1000  # how far past its wall time a write follows other bytes' stamps
MAX_LAMPORT = 2**63 - 1
SEEN_HISTORY_S = 300.0


def wall_ms(now: float) -> int:
    return int(now * 1000)


def is_too_far_ahead(value: int, now: float) -> bool:
    """True when a received Lamport value lies beyond what any honest clock can have produced yet."""
    return value > wall_ms(now) + MAX_AHEAD_MS


def hold_allowance(skew_s: float | None) -> int:
    """How far past our bound (ms) a value is held rather than refused, for a sender or author
    whose clock runs `skew_s` ahead of ours by its heartbeats (None: not measured yet)."""
    ahead = min(max(0.0, skew_s or 0.0), MAX_AHEAD_MS / 1000)
    return HOLD_MS + wall_ms(ahead)


def hold_or_refuse(value: int, now: float, allowance_ms: int = HOLD_MS) -> str | None:
    """None when a received value may be merged now; "hold" when it is past the bound by at most
    `allowance_ms` (merge it once `is_too_far_ahead` says no); "refuse" beyond that."""
    excess = value - (wall_ms(now) + MAX_AHEAD_MS)
    if excess <= 0:
        return None
    return "hold" if excess <= allowance_ms else "refuse"


class HybridClock:
    """Lamport clock with a wall-time floor; times are seconds since the Unix epoch, passed in.

    `last` is the highest value given or seen; values given before this clock existed (a restart
    from disk) count as seen before any write of this run.
    """

    def __init__(self, last: int = 0) -> None:
        if not 0 <= last <= MAX_LAMPORT:
            raise ValueError(f"clock value {last} is out of range")
        self.last = last
        self._own = 0
        self._seen_floor = last  # everything seen before the oldest entry of `_seen`
        self._seen_times: deque[float] = deque()  # when each value of `_seen_values` was first seen
        self._seen_values: deque[int] = deque()  # increasing

    def tick(self, now: float) -> int:
        """The value of a write made now."""
        return self.stamp(now, now)

    def stamp(self, written_at: float, now: float, *, floor: int | None = None) -> int:
        """The value of a write the game made at `written_at` and that is published at `now`;
        `floor` is the highest stamp on what it overwrites (None: anything may matter)."""
        if self._seen_times and now < self._seen_times[-1]:
            self._forget_history()  # the wall clock stepped back: times no longer compare
        written_at = min(written_at, now)
        causal = max(self._own, self.seen_by(written_at))
        if floor is not None:  # beat what it overwrites; anything else only up to CROSS_BYTE_MS ahead
            causal = min(causal, max(floor, wall_ms(written_at) + CROSS_BYTE_MS))
        value = max(causal + 1, wall_ms(written_at))
        self._own = max(self._own, value)
        self.last = max(self.last, value)
        return value

    def observe(self, value: int, now: float) -> None:
        """A value received at `now` (a peer's write)."""
        if value <= self.last:
            return
        self.last = value
        if self._seen_times and now < self._seen_times[-1]:
            now = self._seen_times[-1]  # the wall clock stepped back: keep the history ordered
        self._seen_times.append(now)
        self._seen_values.append(value)
        while self._seen_times and self._seen_times[0] < now - SEEN_HISTORY_S:
            self._seen_times.popleft()
            self._seen_floor = self._seen_values.popleft()

    def _forget_history(self) -> None:
        if self._seen_values:
            self._seen_floor = self._seen_values[-1]
        self._seen_times.clear()
        self._seen_values.clear()

    def seen_by(self, when: float) -> int:
        """The highest value seen at or before `when` (own values not included)."""
        position = bisect_right(self._seen_times, when)
        return self._seen_values[position - 1] if position else self._seen_floor


CLOCK_WARN_S = 5.0
"""Players whose clocks differ by this much are told so (issue 30, F7). Not a third of the bound
(20 s, as before): what a skew costs starts well below the bound. Under a member pinning the
bound, the faster player's writes to bytes the liar stamped reach slower players late by the
skew; a few seconds of that is already a broken game. Clocks kept by NTP differ by tens of
milliseconds and a week without it drifts by a few seconds at most, so an honest room is not
told; a clock off by 5 s is wrong, and fixing it is what helps. It is half `CROSS_BYTE_MS`, so
players are told well before their writes can lose the order across bytes."""


def clocks_far_apart(skew_s: float) -> bool:
    """Whether a peer's clock (its heartbeats' skew from ours, seconds) is worth telling about."""
    return abs(skew_s) >= CLOCK_WARN_S
