"""The crash test's bookkeeping and arithmetic: what was written, killed and seen, and what was lost.

Pure: no asyncio, no processes, no clock. scripts/crash_test.py feeds it wall times it took
itself; everything here is a function of those records, so the figures can be recomputed from
the run's event log.

A write's value names its author and a counter (`value_for`), so any byte seen anywhere in the
run (RAM, disk) points back to the one write that put it there (`Ledger.source`). A write *reached
the room* when some other player's emulator showed it. It is *lost* when it reached the room and
the room's final value at its address comes from an older write, or from no write at all (a zero:
some emulator's boot-time RAM clear was published): nothing newer overwrote it.

A *rollback* (issue 31) is a newer write taken back by an older one: an emulator showed a write,
then (in the same run of that emulator) an older write to the same byte, and the newer one had
reached the room. Not merely late: the older one was never to be shown again. A write lost with
its author's crash never reached the room, so it is counted as unpublished, not here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PER_AUTHOR = 85  # values 1 + author * 85 + counter % 85: author 0..2, never 0 (the boot clear)


def value_for(author: int, counter: int) -> int:
    if not 0 <= author < 3:
        raise ValueError(f"author index {author} does not fit in a byte's value")
    return 1 + author * PER_AUTHOR + counter % PER_AUTHOR


def author_of(value: int) -> int | None:
    """The author index a value encodes (None for 0, which no write of the test makes)."""
    return None if value == 0 else (value - 1) // PER_AUTHOR


@dataclass(frozen=True)
class Write:
    author: str
    address: int
    value: int
    sent: float  # wall time just before the command went to the author's openMSX
    done: float  # wall time of openMSX's reply: the byte was in RAM by then
    incarnation: int  # which start of the author's peer made it (1 = first)


@dataclass(frozen=True)
class Kill:
    player: str
    how: str  # "kill -9" or "SIGTERM"
    at: float
    incarnation: int


@dataclass(frozen=True)
class Lost:
    write: Write
    final_value: int
    replaced_by: Write | None  # the older write whose value is final (None: a zero)
    before_kill: float | None  # seconds from the write to its author's next kill (None: no kill)


@dataclass(frozen=True)
class Rollback:
    viewer: str
    address: int
    newer: Write  # shown first
    older: Write  # shown after it, in the same emulator
    at: float  # when the older one was seen


@dataclass
class Ledger:
    """Every write, when each first showed in another player's emulator, and every kill."""

    writes: list[Write] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    reached: dict[Write, float] = field(default_factory=dict)  # write -> first seen elsewhere
    _by_value: dict[tuple[int, int], list[Write]] = field(default_factory=lambda: defaultdict(list))
    _newest_shown: dict[tuple[str, int, int], Write] = field(default_factory=dict)
    _taken_back: list[Rollback] = field(default_factory=list)

    def add_write(self, write: Write) -> None:
        self.writes.append(write)
        self._by_value[(write.address, write.value)].append(write)

    def add_kill(self, kill: Kill) -> None:
        self.kills.append(kill)

    def source(self, address: int, value: int, at: float | None = None) -> Write | None:
        """The latest write of VALUE at ADDRESS (made before AT, if given)."""
        candidates = [w for w in self._by_value.get((address, value), []) if at is None or w.sent <= at]
        return candidates[-1] if candidates else None

    def seen(self, viewer: str, address: int, value: int, at: float) -> None:
        """VIEWER's emulator showed VALUE at ADDRESS at wall time AT."""
        write = self.source(address, value, at)
        if write is not None and write.author != viewer and write not in self.reached:
            self.reached[write] = at

    def shown(self, viewer: str, incarnation: int, address: int, value: int, at: float) -> None:
        """VIEWER's emulator (of its INCARNATION-th start) showed VALUE at ADDRESS at AT."""
        self.seen(viewer, address, value, at)
        write = self.source(address, value, at)
        if write is None:
            return
        key = (viewer, incarnation, address)
        newest = self._newest_shown.get(key)
        if newest is None or write.sent > newest.sent:
            self._newest_shown[key] = write
        elif write.sent < newest.sent:
            self._taken_back.append(Rollback(viewer, address, newest, write, at))

    def rollbacks(self) -> list[Rollback]:
        """Newer writes that reached the room and were taken back by older ones, once per
        emulator, byte and newer write."""
        result, counted = [], set()
        for item in self._taken_back:
            key = (item.viewer, item.address, item.newer)
            if item.newer in self.reached and key not in counted:
                counted.add(key)
                result.append(item)
        return result

    def next_kill(self, write: Write) -> Kill | None:
        later = [k for k in self.kills if k.player == write.author and k.at >= write.sent]
        return min(later, key=lambda k: k.at, default=None)

    def lost(self, final: Mapping[int, int], until: float | None = None) -> list[Lost]:
        """Writes (made before UNTIL) that reached the room but whose value FINAL does not hold
        nor overwrote with something newer."""
        result = []
        for address, value in sorted(final.items()):
            holder = self.source(address, value)
            for write in self.writes:
                if write.address != address or write not in self.reached:
                    continue
                if until is not None and write.sent > until:
                    continue
                if holder is None or write.sent > holder.done:
                    kill = self.next_kill(write)
                    gap = None if kill is None else kill.at - write.done
                    result.append(Lost(write, value, holder, gap))
        return result

    def unpublished(self, until: float) -> list[tuple[Write, float | None]]:
        """Writes no other player ever showed, with seconds to their author's next kill."""
        result = []
        for write in self.writes:
            if write in self.reached or write.sent > until:
                continue
            kill = self.next_kill(write)
            result.append((write, None if kill is None else kill.at - write.done))
        return result


def wiped(before: Mapping[int, int], after: Mapping[int, int | None]) -> list[int]:
    """Addresses that held a value before and hold zero (or nothing) after."""
    return sorted(a for a, v in before.items() if v != 0 and not after.get(a))


def spread(values: Iterable[float]) -> dict[str, float] | None:
    items = sorted(values)
    if not items:
        return None
    return {"min": items[0], "median": items[len(items) // 2], "max": items[-1], "n": len(items)}
