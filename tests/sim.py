"""An in-memory mesh of real `Replica`s for tests: every message goes through the real codec.

The network holds messages in flight; a test (or Hypothesis) decides which to deliver, drop,
duplicate or reorder, and which pairs are partitioned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from games.definition import Region
from peer.core.sync import codec
from peer.core.sync.replica import DIGEST_INTERVAL, BytesChanged, Event, Replica
from peer.core.sync.state import Run, SignedBatch

REGIONS = (Region(0xE000, 0xE00F), Region(0xE100, 0xE103))
ROOM = "sim-room"
START = 1_800_000_000.0


def key(number: int) -> SigningKey:
    return SigningKey(bytes([number + 1]) * 32)


def signed(
    signing_key: SigningKey, lamport: int, runs: tuple[Run, ...], *, session: int = 101, room: str = ROOM
) -> SignedBatch:
    """A batch signed by SIGNING_KEY (tests' key(1) has session 101 in `Mesh.create`)."""
    return codec.sign_batch(signing_key, room=room, session=session, lamport=lamport, runs=runs, totals=())


def write_batch(
    signing_key: SigningKey, lamport: int, runs: tuple[Run, ...], *, session: int = 101
) -> codec.WriteBatch:
    return codec.WriteBatch.of(signed(signing_key, lamport, runs, session=session))


def open_stored(room: str = ROOM) -> Callable[[bytes], SignedBatch]:
    """How a test restores `SharedState.from_bytes`: every batch's signature checked."""
    return lambda raw: codec.open_batch(raw, room=room, authors=None)


@dataclass
class Mesh:
    replicas: list[Replica]
    now: float = START  # the monotonic clock every replica runs its timers on
    wall_offset: float = 0.0  # the wall clock is `now` plus this; a test may step it
    in_flight: list[tuple[int, int, bytes]] = field(default_factory=list)
    blocked: set[frozenset[int]] = field(default_factory=set)
    events: list[tuple[int, Event]] = field(default_factory=list)

    @classmethod
    def create(cls, size: int, regions: tuple[Region, ...] = REGIONS) -> Mesh:
        replicas = [
            Replica(signing_key=key(n), room=ROOM, regions=regions, session=n + 100) for n in range(size)
        ]
        mesh = cls(replicas)
        for replica in replicas:
            for other in replicas:
                if other is not replica:
                    replica.add_peer(other.key, START)
        mesh.collect()
        return mesh

    @property
    def wall(self) -> float:
        return self.now + self.wall_offset

    def index_of(self, peer: bytes) -> int:
        return next(i for i, r in enumerate(self.replicas) if r.key == peer)

    def collect(self) -> None:
        for source, replica in enumerate(self.replicas):
            for peer, data in replica.messages_to_send():
                target = self.index_of(peer)
                if frozenset((source, target)) not in self.blocked:
                    self.in_flight.append((source, target, data))

    def write(self, index: int, address: int, data: bytes) -> None:
        self.replicas[index].local_changes([(address, data)], self.now, wall=self.wall)
        self.collect()

    def deliver(self, position: int) -> list[Event]:
        source, target, data = self.in_flight.pop(position % len(self.in_flight))
        events = self.replicas[target].receive(self.replicas[source].key, data, self.now, wall=self.wall)
        self.events += [(target, event) for event in events]
        self.collect()
        return events

    def deliver_all(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.in_flight:
                return
            self.deliver(0)
        raise AssertionError("the mesh did not go quiet")

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for index, replica in enumerate(self.replicas):
            self.events += [(index, event) for event in replica.handle_timer(self.now, wall=self.wall)]
        self.collect()

    def settle(self, rounds: int = 4) -> None:
        """Heal everything and let digest checks run until every replica agrees."""
        self.blocked.clear()
        self.deliver_all()
        for _ in range(rounds):
            if self.converged():
                return
            self.advance(DIGEST_INTERVAL)
            self.deliver_all()

    def converged(self) -> bool:
        return len({replica.state.digest() for replica in self.replicas}) == 1

    def changes_seen_by(self, index: int) -> list[BytesChanged]:
        return [e for i, e in self.events if i == index and isinstance(e, BytesChanged)]
