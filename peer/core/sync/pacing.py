"""The pace of publishing: local changes coalesced into batches, at most `PUBLISH_RATE` a second.

An honest sender stays well inside the receivers' rate budget (`replica.RATE_PER_SECOND`, 240
messages a second with bursts of 480): local changes are published at most PUBLISH_RATE times a
second, with bursts of PUBLISH_BURST (so a late frame followed by an on-time one is not delayed);
changes made while no publication is due are coalesced (newest value per byte, counters' deltas
summed) into the next batch, which carries the latest time the game made any of them. At 60 Hz
every frame's batch goes out at once.

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
        self._pending: dict[int, int] = {}  # address -> newest value not yet published
        self._deltas: dict[int, int] = {}  # counter -> sum of the deltas not yet published
        self._written_at: float | None = None
        self._due: float | None = None

    def add(self, runs: Iterable[Run], written_at: float, deltas: Iterable[Delta] = ()) -> None:
        """Changes the game made by `written_at` (checked to be shared by the caller)."""
        self._pending.update(byte_values(runs))
        for first, delta in deltas:
            self._deltas[first] = self._deltas.get(first, 0) + delta
        self._written_at = written_at if self._written_at is None else max(self._written_at, written_at)

    def get_timer(self) -> float | None:
        """When the next batch may go out, while one waits for the pace (None: go at once)."""
        return self._due

    def take(self, now: float) -> Batch | None:
        """The batch to publish now, or None (nothing pending, or not yet: see `get_timer`)."""
        elapsed, self._tokens_at = now - self._tokens_at, now
        self._tokens = min(self._burst, self._tokens + max(0.0, elapsed) * self._rate)
        if self._tokens < 1.0:
            self._due = now + (1.0 - self._tokens) / self._rate
            return None
        self._due = None
        if not (self._pending or self._deltas) or self._written_at is None:
            return None
        runs = _runs(self._pending)
        self._tokens -= batch_cost(runs)
        deltas = tuple((first, delta) for first, delta in sorted(self._deltas.items()) if delta)
        batch = Batch(tuple(runs), self._written_at, deltas)
        self._pending.clear()
        self._deltas.clear()
        self._written_at = None
        return batch


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
