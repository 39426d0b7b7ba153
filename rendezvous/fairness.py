"""Fair shares of a public rendezvous: what one source address, and one connection, may hold.

Issue 16 found every limit per connection or global, so one host could lock everyone else out:
take every connection slot, create every room, fill the password-hash queue, reconnect with a new
key to get a fresh rate bucket, or park megabytes in send queues it never reads. This module
owns the per-source accounting that answers that, and the byte bound of one send queue:

- `TokenBucket`: rate and burst, with time passed in (`now`, monotonic seconds).
- `Sources`: per source address, open connections, password checks in flight, and buckets for
  messages, password checks, relayed bytes, roster changes and binary frames. The buckets
  outlive the connections (a reconnect, with a new key or not, finds its address's bucket as it
  left it); an address is forgotten only once it has no connection and every bucket has refilled.
- `network_of`: the network an address is counted in as well (issue 29: 125 addresses of one
  IPv4 /24 took every connection and room, and one IPv6 /64 is 2^64 addresses). Every share of
  `Sources` is kept per address *and* per network (an IPv4 /24, an IPv6 /64); a network may hold
  `network_share` times what one address may (4 by default), which leaves room for the shared
  addresses of a campus, a CGNAT pool or a household's IPv6 privacy addresses, and stops one
  network short of a server's worth.
- `SendBacklog`: the bytes one connection has queued but not yet written; over `cap` it is cut
  off at once, above `share` for longer than `grace` it is cut off too, whatever it answers to
  pings (a slow reader cannot hold memory without end). What other members relay to it may fill
  only `share` bytes and half the queue's slots (`relay_fits`), and is dropped beyond: that
  alone never cuts it off.
- `text_problem`: whether a text from a client is fit to keep and show.

Pure: no asyncio, aiohttp, sockets, clock or randomness; it must not import any of them.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from dataclasses import dataclass, field

IPV4_PREFIX = 24  # an IPv4 network: the usual size of one allocation to one site
IPV6_PREFIX = 64  # an IPv6 network: what one household or one host is given (RFC 6177)


def network_of(source: str) -> str:
    """The network `source` is counted in besides itself: its /24 (IPv4) or /64 (IPv6), written
    as a CIDR; an IPv4-mapped IPv6 address counts as its IPv4 address. A source that is not an
    address (a name, "unknown") is its own network."""
    try:
        address = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return source
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved; `take(now, cost)` spends them or refuses."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.updated = max(self.updated, now)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)

    def can_take(self, now: float, cost: float = 1.0) -> bool:
        self._refill(now)
        return self.tokens >= min(cost, self.burst)

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are that many (a cost above `burst` needs a full bucket)."""
        if not self.can_take(now, cost):
            return False
        self.tokens -= min(cost, self.burst)
        return True

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.burst


@dataclass(frozen=True, slots=True)
class SourceLimits:
    """What one source address may hold. Defaults let a family (or a LAN party) behind one
    address play: several players each with a spare connection, a few rooms each."""

    connections: int = 16  # open WebSocket connections
    rooms: int = 8  # rooms it created that still exist
    password_checks: int = 2  # argon2id checks in flight at once
    password_rate: float = 0.5  # checks a second sustained (30 a minute) ...
    password_burst: int = 10  # ... after a burst of this many
    rate: float = 60.0  # messages a second over all its connections, surviving reconnects ...
    burst: int = 240  # ... after a burst of this many
    relay_rate: float = 256 * 1024  # relayed bytes (signals, chat) a second ...
    relay_burst: int = 1024 * 1024  # ... after a burst of this many (no more than a send queue holds)
    # Joins, leaves, kicks and `ready`: each sends every member of the room an event and a roster
    # (issue 29, F7: 57 `ready` toggles a second sent 307 KiB/s to every member).
    roster_rate: float = 2.0  # roster changes a second ...
    roster_burst: int = 20  # ... after a burst of this many (a household rejoining after a blip)
    # Binary frames over all its connections, refused ones too (each connection: relay.RelayLimits).
    frame_rate: float = 2048.0
    frame_burst: int = 128
    # A network (IPv4 /24, IPv6 /64) may hold this many times each share of one address.
    network_share: int = 4

    def __post_init__(self) -> None:
        counts = ("connections", "rooms", "password_checks", "password_burst", "burst", "relay_burst")
        for name in (*counts, "roster_burst", "frame_burst", "network_share"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("password_rate", "rate", "relay_rate", "roster_rate", "frame_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")

    def for_network(self) -> SourceLimits:
        """What one network may hold: `network_share` times each share of one address."""
        n = self.network_share
        return SourceLimits(
            connections=n * self.connections,
            rooms=n * self.rooms,
            password_checks=n * self.password_checks,
            password_rate=n * self.password_rate,
            password_burst=n * self.password_burst,
            rate=n * self.rate,
            burst=n * self.burst,
            relay_rate=n * self.relay_rate,
            relay_burst=n * self.relay_burst,
            roster_rate=n * self.roster_rate,
            roster_burst=n * self.roster_burst,
            frame_rate=n * self.frame_rate,
            frame_burst=n * self.frame_burst,
            network_share=1,
        )


@dataclass(slots=True)
class _Source:
    messages: TokenBucket
    passwords: TokenBucket
    relay: TokenBucket
    rosters: TokenBucket
    frames: TokenBucket
    connections: int = 0
    checking: int = 0

    def idle(self, now: float) -> bool:
        buckets = (self.messages, self.passwords, self.relay, self.rosters, self.frames)
        return self.connections == 0 and self.checking == 0 and all(b.full(now) for b in buckets)


@dataclass
class SourceStatistics:
    refused_connections: int = 0
    limited_messages: int = 0
    limited_relay: int = 0
    limited_rosters: int = 0
    limited_frames: int = 0
    refused_password_checks: int = 0


@dataclass
class Sources:
    """The per-address ledger, kept for each address and for its network (`network_of`): each
    method says yes only when both have the share, and charges both; a "no" is counted in
    `stats`."""

    limits: SourceLimits = field(default_factory=SourceLimits)
    stats: SourceStatistics = field(default_factory=SourceStatistics)
    _table: dict[str, _Source] = field(default_factory=dict)
    _prune_countdown: int = 256

    def __post_init__(self) -> None:
        self._network_limits = self.limits.for_network()

    def _entry(self, key: str, limits: SourceLimits, now: float) -> _Source:
        entry = self._table.get(key)
        if entry is None:
            entry = self._table[key] = _Source(
                TokenBucket(limits.rate, limits.burst, now),
                TokenBucket(limits.password_rate, limits.password_burst, now),
                TokenBucket(limits.relay_rate, limits.relay_burst, now),
                TokenBucket(limits.roster_rate, limits.roster_burst, now),
                TokenBucket(limits.frame_rate, limits.frame_burst, now),
            )
        return entry

    def _get(self, source: str, now: float) -> tuple[_Source, _Source]:
        """The entries of `source` and of its network (the same one when it is its own network:
        then only the address's share applies)."""
        network = network_of(source)
        if source not in self._table or network not in self._table:
            self._maybe_prune(now)  # before either is made: a fresh entry is idle, prunable
        own = self._entry(source, self.limits, now)
        if network == source:
            return own, own
        return own, self._entry(network, self._network_limits, now)

    def _maybe_prune(self, now: float) -> None:
        self._prune_countdown -= 1
        if self._prune_countdown > 0:
            return
        self._prune_countdown = max(256, len(self._table))
        for source in [s for s, e in self._table.items() if e.idle(now)]:
            del self._table[source]

    def __len__(self) -> int:
        return len(self._table)

    def connections(self, source: str) -> int:
        entry = self._table.get(source)
        return 0 if entry is None else entry.connections

    def open(self, source: str, now: float) -> bool:
        """Take a connection slot for `source`, or refuse (it, or its network, holds its share)."""
        own, network = self._get(source, now)
        if own.connections >= self.limits.connections or (
            network is not own and network.connections >= self._network_limits.connections
        ):
            self.stats.refused_connections += 1
            return False
        own.connections += 1
        if network is not own:
            network.connections += 1
        return True

    def close(self, source: str, now: float) -> None:
        for key in dict.fromkeys((source, network_of(source))):
            entry = self._table.get(key)
            if entry is not None and entry.connections > 0:
                entry.connections -= 1
                if entry.idle(now):
                    del self._table[key]

    def admit_message(self, source: str, now: float) -> bool:
        if self._take("messages", source, now, 1.0):
            return True
        self.stats.limited_messages += 1
        return False

    def admit_relay(self, source: str, size: int, now: float) -> bool:
        """`size` bytes to relay to others (a signal's data, a chat's text)."""
        if self._take("relay", source, now, size):
            return True
        self.stats.limited_relay += 1
        return False

    def admit_roster_change(self, source: str, now: float) -> bool:
        """A join, leave, kick or `ready`: the roster it sends every member is charged here."""
        if self._take("rosters", source, now, 1.0):
            return True
        self.stats.limited_rosters += 1
        return False

    def admit_frame(self, source: str, now: float) -> bool:
        """One binary frame, whatever becomes of it."""
        if self._take("frames", source, now, 1.0):
            return True
        self.stats.limited_frames += 1
        return False

    def _take(self, bucket: str, source: str, now: float, cost: float) -> bool:
        """Spend `cost` from the bucket of the address and of its network, or from neither."""
        buckets = [getattr(entry, bucket) for entry in _distinct(*self._get(source, now))]
        if not all(b.can_take(now, cost) for b in buckets):
            return False
        for b in buckets:
            b.take(now, cost)
        return True

    def begin_password_check(self, source: str, now: float) -> str | None:
        """None when `source` may have one more password checked now (then call
        `end_password_check`), else the refusal code: `busy` (its share, or its network's, is in
        flight) or `rate_limited` (it, or its network, has made too many guesses lately)."""
        own, network = self._get(source, now)
        if own.checking >= self.limits.password_checks or (
            network is not own and network.checking >= self._network_limits.password_checks
        ):
            self.stats.refused_password_checks += 1
            return "busy"
        if not self._take("passwords", source, now, 1.0):
            self.stats.refused_password_checks += 1
            return "rate_limited"
        for entry in _distinct(own, network):
            entry.checking += 1
        return None

    def end_password_check(self, source: str) -> None:
        for key in dict.fromkeys((source, network_of(source))):
            entry = self._table.get(key)
            if entry is not None and entry.checking > 0:
                entry.checking -= 1


def _distinct(own: _Source, network: _Source) -> tuple[_Source, ...]:
    return (own,) if network is own else (own, network)


class SendBacklog:
    """Bytes queued for one connection and not yet written.

    `add` says why the connection must go (a sentence for the log and the close frame), or None:
    more than `cap` bytes waiting at once, or more than `share` continuously for `grace` seconds.
    """

    def __init__(self, cap: int, share: int, grace: float) -> None:
        if not 0 < share <= cap or grace <= 0:
            raise ValueError("need 0 < share <= cap and a positive grace")
        self.cap = cap
        self.share = share
        self.grace = grace
        self.bytes = 0
        self.over_since: float | None = None

    def add(self, size: int, now: float) -> str | None:
        self.bytes += size
        if self.bytes > self.cap:
            return f"slow reader: {self.bytes} bytes waiting, more than {self.cap}"
        if self.bytes <= self.share:
            self.over_since = None
            return None
        if self.over_since is None:
            self.over_since = now
        elif now - self.over_since > self.grace:
            return f"slow reader: more than {self.share} bytes waiting for over {self.grace:g} s"
        return None

    def relay_fits(self, size: int, waiting: int, slots: int) -> bool:
        """Whether another member's message of `size` bytes may join `waiting` queued ones (of at
        most `slots`): relayed traffic takes at most `share` bytes and half the slots, so it never
        reaches the bounds that cut a client off, and leaves room for the server's own messages."""
        return self.bytes + size <= self.share and (slots <= 0 or waiting < max(1, slots // 2))

    def sent(self, size: int) -> None:
        self.bytes = max(0, self.bytes - size)
        if self.bytes <= self.share:
            self.over_since = None


# Characters that change how the text around them reads (bidi overrides and isolates) or are not
# text at all (controls, lone surrogates); tabs and newlines have no place in chat lines either.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def text_problem(text: str) -> str | None:
    """Why `text` is unfit to keep and show to other players, or None when it is fine."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "valid Unicode (no lone surrogates)"
    for char in text:
        if char in _BIDI_CONTROLS:
            return "free of direction overrides (U+202A-U+202E, U+2066-U+2069)"
        if unicodedata.category(char) in ("Cc", "Cs"):
            return "free of control characters"
    return None
