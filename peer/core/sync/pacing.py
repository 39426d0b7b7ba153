"""The pace of publishing: local changes coalesced into batches, at most `PUBLISH_RATE` a second.

An honest sender stays well inside the receivers' rate budget (`replica.RATE_PER_SECOND`, 240
messages a second with bursts of 480): local changes are published at most PUBLISH_RATE times a
second, with bursts of PUBLISH_BURST (so a late frame followed by an on-time one is not delayed);
changes made while no publication is due are coalesced (newest value per byte, counters' deltas
summed) into the next batches. At 60 Hz every frame's batch goes out at once.

One batch carries one stamp, and the stamp is built from when the game made the changes
(`clock.HybridClock.stamp`): a byte stamped later than it was written beats the other players'
writes made in between, and that is a rollback (issue 31: a peer whose process stalled for 10 s
read its emulator's backlog at once, coalesced it, stamped a byte written 5 s earlier with the
backlog's latest time, and took back a newer write everywhere). So each pending byte keeps when
its newest value was written, and a batch only coalesces bytes written within `COALESCE_S` of the
oldest pending one (one emulator check, in practice); later ones go in the next batches, oldest
first. After a stall the backlog collapses to the newest value per byte, in a few batches.

Receivers charge work, not messages (`replica.message_cost`: bytes and runs), so the pacer charges
a batch the same way: a frame of a few bytes costs one token, a frame of 24 KiB in 1,500 runs costs
about 150, and the next batch waits until the bucket is back above one token. At PUBLISH_RATE,
half the receivers' rate, an honest sender is never throttled however much its game writes.

Pure: `now` is a monotonic time passed in; `written_at` a wall time that is only carried along.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from peer.core.sync.replica import RUNS_PER_TOKEN, message_cost
from peer.core.sync.state import Delta, Run, byte_values

PUBLISH_RATE = 120.0
PUBLISH_BURST = 4.0
COALESCE_S = 0.010  # bytes the game wrote this close together may share one batch (and stamp)
TOKEN_SLACK = 1e-6  # so that a due time is never `now` again: a loop on it would spin


@dataclass(frozen=True, slots=True)
class Batch:
    runs: tuple[Run, ...]
    written_at: float
    deltas: tuple[Delta, ...] = ()


class PublishPacer:
    def __init__(self, now: float, rate: float = PUBLISH_RATE, burst: float = PUBLISH_BURST) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("the publishing rate must be positive and the burst at least 1")
        self._rate, self._burst = rate, burst
        self._tokens, self._tokens_at = burst, now
        self._pending: dict[int, tuple[int, float]] = {}  # address -> newest value, when written
        self._deltas: dict[int, int] = {}  # counter -> sum of the deltas not yet published
        self._deltas_at: float | None = None
        self._due: float | None = None

    def add(self, runs: Iterable[Run], written_at: float, deltas: Iterable[Delta] = ()) -> None:
        """Changes the game made by `written_at` (checked to be shared by the caller)."""
        for address, value in byte_values(runs).items():
            self._pending[address] = (value, written_at)
        for first, delta in deltas:
            self._deltas[first] = self._deltas.get(first, 0) + delta
            self._deltas_at = written_at if self._deltas_at is None else max(self._deltas_at, written_at)

    def pending(self) -> dict[int, int]:
        """The game's values not published yet, by address (newer than the replica's, as far as
        this peer knows)."""
        return {address: value for address, (value, _) in self._pending.items()}

    def get_timer(self) -> float | None:
        """When the next batch may go out, while one waits (None: the next change goes at once)."""
        return self._due

    def take(self, now: float) -> Batch | None:
        """The batch to publish now, or None (nothing pending, or not yet: see `get_timer`)."""
        elapsed, self._tokens_at = now - self._tokens_at, now
        self._tokens = min(self._burst, self._tokens + max(0.0, elapsed) * self._rate)
        if self._tokens < 1.0 - TOKEN_SLACK:  # (a refill rounded just below one token is one)
            self._due = now + (1.0 - self._tokens) / self._rate
            return None
        self._due = None
        if not self._pending and not self._deltas:
            return None
        batch = self._oldest_batch()
        self._tokens -= batch_cost(list(batch.runs))
        if self._pending:  # more, written later: as soon as the pace allows
            self._due = now + max(TOKEN_SLACK, 1.0 - self._tokens) / self._rate
        return batch

    def _oldest_batch(self) -> Batch:
        """The bytes written within COALESCE_S of the oldest pending one, and every counter delta
        (a sum, whose stamp orders nothing against other players)."""
        deltas = tuple((first, delta) for first, delta in sorted(self._deltas.items()) if delta)
        written_at = self._deltas_at if self._deltas_at is not None else 0.0
        self._deltas.clear()
        self._deltas_at = None
        if not self._pending:
            return Batch((), written_at, deltas)
        oldest = min(at for _, at in self._pending.values())
        group = {a: (v, at) for a, (v, at) in self._pending.items() if at <= oldest + COALESCE_S}
        for address in group:
            del self._pending[address]
        runs = _runs({address: value for address, (value, _) in group.items()})
        return Batch(tuple(runs), max(at for _, at in group.values()), deltas)


WIRE_OVERHEAD = 200  # header, stamp, totals and signatures of a batch message, roughly


def batch_cost(runs: list[Run]) -> float:
    """What a receiver charges for a batch of these runs (see `replica.message_cost`)."""
    size = WIRE_OVERHEAD + sum(4 + len(data) for _, data in runs)
    cost = message_cost(size) + len(runs) / RUNS_PER_TOKEN
    return 1.0 if cost < 2.0 else cost  # a game's usual frame counts as one message


def _runs(values: dict[int, int]) -> list[Run]:
    """Byte values by address as runs of consecutive addresses."""
    runs: list[tuple[int, bytearray]] = []
    for address in sorted(values):
        if runs and runs[-1][0] + len(runs[-1][1]) == address:
            runs[-1][1].append(values[address])
        else:
            runs.append((address, bytearray([values[address]])))
    return [(address, bytes(data)) for address, data in runs]
