"""The relay of last resort: mesh frames between two members of a room, and what it may cost.

Players who reach each other neither directly nor through TURN send their mesh frames through
the lobby WebSocket as binary frames (PROTOCOL.md, "Relay"). The server reads only the 32-byte
recipient key in front; the rest is sealed by the players (`peer.core.mesh.relay`): the server can drop
a frame but cannot read, alter, invent or replay one without the players noticing. So this module
owns only the cost: per connection and per room, a byte-rate bucket (`RelayLimits`), on top of
the source address's relay bytes (`rendezvous.fairness.Sources.admit_relay`), and the counters.
Every frame costs at least `MIN_COST` bytes, so a flood of tiny frames is bounded too. Before any
of that, every binary frame, refused or not, takes a token of the connection's frame bucket
(`frame_rate`, `frame_burst`): a frame refused for its target cost nothing else, and one member
sent 190,000 of them a second (issue 29, F2). Its burst stays well below the 256 messages of a send
queue, and a connection that keeps sending while refused is closed (`FrameLimiter`, `flooding`).

The bursts fit what a recipient may hold: one connection's (`client_burst`) the relay share of a
send queue (256 KiB), a room's the whole queue (1 MiB); beyond its share a recipient's frames are
dropped, not queued (`rendezvous.connection.Client.send`), so no burst gets a member evicted.

Pure: no asyncio, aiohttp, sockets or clock (`now` comes in); it must not import any of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

from rendezvous.fairness import TokenBucket

MIN_COST = 64  # bytes a frame is charged at least


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """What the relay carries; `enabled=False` is `--no-relay`."""

    enabled: bool = True
    client_rate: float = 64 * 1024  # bytes a second one connection may send through the relay ...
    client_burst: int = 256 * 1024  # ... after a burst of this many (a full state exchange)
    room_rate: float = 256 * 1024  # bytes a second all members of one room together
    room_burst: int = 1024 * 1024
    # Binary frames a second one connection may send, refused ones included: 8 players at 120
    # publications a second each is 840 (`peer.core.sync.pacing`); bursts well below a send queue.
    frame_rate: float = 1024.0
    frame_burst: int = 64

    def __post_init__(self) -> None:
        if not (self.client_rate > 0 and self.room_rate > 0 and self.frame_rate > 0):
            raise ValueError("relay rates must be positive")
        if self.client_burst < MIN_COST or self.room_burst < MIN_COST:
            raise ValueError(f"relay bursts must be at least {MIN_COST} bytes")
        if self.frame_burst < 1:
            raise ValueError("frame_burst must be at least 1")

    def to_json(self) -> dict[str, object] | None:
        """The welcome's `relay` (null when off)."""
        if not self.enabled:
            return None
        return {
            "client_rate": self.client_rate,
            "client_burst": self.client_burst,
            "room_rate": self.room_rate,
            "room_burst": self.room_burst,
            "frame_rate": self.frame_rate,
            "frame_burst": self.frame_burst,
        }


class FrameLimiter:
    """The binary frames of one connection: a token bucket (`rate` a second, bursts of `burst`),
    and its refusals, which leak away at `rate` a second; more than `burst` + `rate` / 4 of them
    pending is flooding (a quarter of a second at twice the rate, or a burst five times too big:
    each connection a flooder opens costs the server about that many frames). A run of
    consecutive refusals (the message limiter's rule) never grows long when the flood is handled
    more slowly than `burst` frames per token: a token comes back in between and it starts over."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.bucket = TokenBucket(rate, burst, now)
        self.rate = rate
        self.limit = burst + rate / 4
        self.strikes = 0.0
        self.updated = now

    def admit(self, now: float) -> str:
        """ "ok", "limited" (drop the frame) or "flood" (cut the connection off)."""
        return "ok" if self.bucket.take(now) else self.strike(now)

    def strike(self, now: float) -> str:
        """One frame refused (by this bucket or a shared one): "limited" or "flood"."""
        leaked = max(0.0, now - self.updated) * self.rate
        self.updated = max(self.updated, now)
        self.strikes = max(0.0, self.strikes - leaked) + 1
        return "flood" if self.strikes > self.limit else "limited"


@dataclass
class RelayLedger:
    """Buckets per connection (by key) and per room (by name), and what was relayed or dropped."""

    limits: RelayLimits = field(default_factory=RelayLimits)
    frames: int = 0
    bytes: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # by reason
    _clients: dict[str, TokenBucket] = field(default_factory=dict)
    _rooms: dict[str, TokenBucket] = field(default_factory=dict)

    def admit(self, key: str, room: str, size: int, now: float) -> str | None:
        """None when `key` may have `size` bytes relayed in `room` now, else the reason it may not
        ("client" or "room"). Both buckets must have room before either is charged."""
        cost = max(MIN_COST, size)
        lim = self.limits
        client = self._clients.get(key) or self._clients.setdefault(
            key, TokenBucket(lim.client_rate, lim.client_burst, now)
        )
        shared = self._rooms.get(room) or self._rooms.setdefault(
            room, TokenBucket(lim.room_rate, lim.room_burst, now)
        )
        if not client.can_take(now, cost):
            return self.drop("client")
        if not shared.can_take(now, cost):
            return self.drop("room")
        client.take(now, cost)
        shared.take(now, cost)
        self.frames += 1
        self.bytes += size
        return None

    def drop(self, reason: str) -> str:
        self.dropped[reason] += 1
        return reason

    def forget_client(self, key: str) -> None:
        """A connection ended. (Its key's bucket goes; the address's bucket, in `Sources`, stays.)"""
        self._clients.pop(key, None)

    def forget_rooms(self, existing: Collection[str]) -> None:
        """Drop the buckets of rooms that are gone (a room opened again under the same name
        starts with a full budget, and closed rooms cost no memory)."""
        for name in [n for n in self._rooms if n not in existing]:
            del self._rooms[name]

    def statistics(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "bytes": self.bytes,
            "dropped": sum(self.dropped.values()),
            "room_budgets": len(self._rooms),
            **{f"dropped_{reason}": count for reason, count in sorted(self.dropped.items())},
        }
