"""Who may have what from a public rendezvous beyond a connection: TURN credentials, password guesses
at one room, room look-ups over HTTP (issue 29, findings 8, 10 and 11).

Owns the budgets that are not a connection's or a whole address's share of the lobby:
- `KeyedBuckets`: token buckets by key (a source address, a room name) in a bounded table: a key
  whose bucket has refilled is forgotten, and past `capacity` keys the least recently used goes
  (it starts again with a full bucket, which costs an attacker its table entries, not others).
- `AccessLimits`: the rates and bursts, all tunable, defaults documented in PROTOCOL.md.
- `Access`: the three ledgers together, each question answered by a method taking `now`:
  `turn_credentials(source)` (TURN credentials handed out per source address: a join costs one,
  a member's renewal nothing), `guess(room, past_member)` (password checks against one room's
  hash, whoever makes them: seconds to wait, or None; a key that was a member of the room is never
  held back, since it has proven the password before) and `room_lookup(source)` (`GET
  /api/rooms/NAME` per source address). The per-source budgets are kept for the source's network
  too (`fairness.network_of`: an IPv4 /24, an IPv6 /64), which has `network_share` times an
  address's (issue 29 round three: 40 addresses of one /24 got 800 TURN credentials in 4 s).

Pure: no asyncio, aiohttp, sockets, clock or randomness; it must not import any of them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from rendezvous.fairness import TokenBucket, network_of


class KeyedBuckets:
    """Token buckets by key, at most `capacity` of them (the least recently used go first)."""

    def __init__(self, rate: float, burst: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        TokenBucket(rate, burst, 0.0)  # the same checks as each bucket's
        self.rate, self.burst, self.capacity = rate, burst, capacity
        self._table: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def bucket(self, key: str, now: float) -> TokenBucket:
        bucket = self._table.get(key)
        if bucket is not None:
            self._table.move_to_end(key)
            return bucket
        if len(self._table) >= self.capacity:
            self._prune(now)
        while len(self._table) >= self.capacity:
            self._table.popitem(last=False)
        bucket = self._table[key] = TokenBucket(self.rate, self.burst, now)
        return bucket

    def _prune(self, now: float) -> None:
        for key in [k for k, bucket in self._table.items() if bucket.full(now)]:
            del self._table[key]

    def take(self, key: str, now: float) -> bool:
        return self.bucket(key, now).take(now)

    def wait(self, key: str, now: float) -> float | None:
        """Take one token for `key`, or say how many seconds until there is one (never 0)."""
        return _take_all([self.bucket(key, now)], now)


def _take_all(buckets: list[TokenBucket], now: float) -> float | None:
    """Take one token from each of BUCKETS, or from none and say how many seconds until each
    has one (never 0)."""
    if all(bucket.can_take(now) for bucket in buckets):
        for bucket in buckets:
            bucket.take(now)
        return None
    return max(max(0.1, (1.0 - b.tokens) / b.rate) for b in buckets if not b.can_take(now))


class SourceBuckets:
    """`KeyedBuckets` for source addresses and for their networks (`network_of`), a network with
    `network_share` times an address's rate and burst: a token is taken from both, or neither."""

    def __init__(self, rate: float, burst: int, capacity: int, network_share: int) -> None:
        if network_share < 1:
            raise ValueError("network_share must be at least 1")
        self.sources = KeyedBuckets(rate, burst, capacity)
        self.networks = KeyedBuckets(rate * network_share, burst * network_share, capacity)

    def wait(self, source: str, now: float) -> float | None:
        network = network_of(source)
        buckets = [self.sources.bucket(source, now)]
        if network != source:
            buckets.append(self.networks.bucket(network, now))
        return _take_all(buckets, now)


@dataclass(frozen=True, slots=True)
class AccessLimits:
    """The budgets of `Access`; defaults let a family behind one address play as usual."""

    turn_rate: float = 1 / 30  # TURN credentials handed out to one address a second (2 a minute) ...
    turn_burst: int = 20  # ... after a burst of this many (a room of players joining, twice)
    guess_rate: float = 0.2  # password checks against one room a second (one per 5 s) ...
    guess_burst: int = 10  # ... after a burst of this many; past members never wait
    # GET /api/rooms/NAME a second from one address (peers that lost their rendezvous probe once a
    # second each, a room of them behind one address) ...
    lookup_rate: float = 10.0
    lookup_burst: int = 60  # ... after a burst of this many
    table: int = 10_000  # addresses and rooms each ledger remembers
    network_share: int = 4  # a network's budgets are this many times an address's (SourceLimits')

    def __post_init__(self) -> None:
        for name in ("turn_rate", "guess_rate", "lookup_rate"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be positive")
        for name in ("turn_burst", "guess_burst", "lookup_burst", "table", "network_share"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(slots=True)
class AccessStatistics:
    turn_issued: int = 0
    turn_refused: int = 0  # joins that got no TURN credentials (their address had had its share)
    guesses_deferred: int = 0  # password checks refused with try_later (the room's budget was spent)
    lookups_refused: int = 0


@dataclass
class Access:
    """The per-source and per-room budgets of `AccessLimits` (see the module docstring)."""

    limits: AccessLimits = field(default_factory=AccessLimits)
    stats: AccessStatistics = field(default_factory=AccessStatistics)
    _turn: SourceBuckets = field(init=False)
    _guesses: KeyedBuckets = field(init=False)
    _lookups: SourceBuckets = field(init=False)

    def __post_init__(self) -> None:
        lim = self.limits
        self._turn = SourceBuckets(lim.turn_rate, lim.turn_burst, lim.table, lim.network_share)
        self._guesses = KeyedBuckets(lim.guess_rate, lim.guess_burst, lim.table)
        self._lookups = SourceBuckets(lim.lookup_rate, lim.lookup_burst, lim.table, lim.network_share)

    def turn_credentials(self, source: str, now: float) -> bool:
        """Whether `source` (and its network) may be handed one more set of TURN credentials now."""
        if self._turn.wait(source, now) is None:
            self.stats.turn_issued += 1
            return True
        self.stats.turn_refused += 1
        return False

    def guess(self, room: str, past_member: bool, now: float) -> float | None:
        """One password check against `room`'s hash: None to go ahead, else the seconds to wait.
        A past member's check is not counted: whoever floods the room cannot keep its players out."""
        if past_member:
            return None
        wait = self._guesses.wait(room, now)
        if wait is not None:
            self.stats.guesses_deferred += 1
        return wait

    def room_lookup(self, source: str, now: float) -> float | None:
        """One `GET /api/rooms/NAME` (or a named join by a non-member) from `source` and its
        network: None to answer, else the seconds to wait."""
        wait = self._lookups.wait(source, now)
        if wait is not None:
            self.stats.lookups_refused += 1
        return wait

    def statistics(self) -> dict[str, int]:
        s = self.stats
        return {
            "turn_issued": s.turn_issued,
            "turn_refused": s.turn_refused,
            "guesses_deferred": s.guesses_deferred,
            "lookups_refused": s.lookups_refused,
        }
