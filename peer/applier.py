"""The emulator applier: everything msxsync writes into openMSX, in order, from one task.

Remote bytes and adoptions of the room's state go through one queue of typed commands, so that an
adoption's writes and the remote bytes that follow it reach the emulator in the order they were
decided. A write gives the emulator the room's value of its bytes as they are when it is carried
out (the replica's), not when it was queued: a local change published meanwhile may have won. And
it never writes over a byte the game changed since the last report msxsync merged (issue 31):
openMSX keeps the game's newer value (`openmsx_protocol.apply_command`'s SEEN), which reaches the
room through its report; if the room's value still wins, the merge's correction is written next.

On-screen messages have their own lane (issue 18, F3): a short queue that drops its oldest line
when full and is served only when no write is waiting, so a flood of chat can neither
delay the game's bytes nor pile up lines on screen; a message still follows the writes queued
before it. The applier does the I/O of an adoption
(write the room's bytes, read the regions) and hands the outcome back to the gate
(`peer.core.emulator.gating`), whose actions the session carries out.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from games.definition import Merge, MergeRule, Region
from peer.core.emulator.gating import Action, AdoptRoom, Gate, WriteToEmulator, room_bytes, unwritten_values
from peer.core.emulator.openmsx_protocol import CounterDelta
from peer.core.sync.replica import Replica
from peer.core.sync.state import Delta, Run
from peer.openmsx import CommandError, OpenMSXLink

log = logging.getLogger("msxsync.peer")


@dataclass(frozen=True, slots=True)
class ShowMessage:
    """Show a line on openMSX's screen."""

    text: str


Command = WriteToEmulator | AdoptRoom | ShowMessage
MESSAGES_KEPT = 4  # on-screen lines waiting; a newer one pushes out the oldest


def split_at_regions(runs: Iterable[Run], regions: Iterable[Region]) -> list[Run]:
    """Cut runs where one region ends and the next begins (openMSX writes one region at a time)."""
    pieces: list[Run] = []
    for address, data in runs:
        for region in regions:
            start, end = max(address, region.start), min(address + len(data) - 1, region.end)
            if start <= end:
                pieces.append((start, data[start - address : end - address + 1]))
    return pieces


class Applier:
    """One task (`run`) writing queued commands into openMSX."""

    def __init__(
        self,
        link: OpenMSXLink,
        regions: Sequence[Region],
        gate: Gate,
        replica: Callable[[], Replica | None],
        act: Callable[[list[Action]], None],
        unpublished: Callable[[], dict[int, int]] = dict,
    ) -> None:
        """`unpublished()`: the game's values not published yet (`MeshCore.unpublished`)."""
        self._link = link
        self._regions = tuple(regions)
        self._counters: dict[int, Merge] = {
            first: region.merge
            for region in self._regions
            if region.merge.rule is MergeRule.ADD
            for first in range(region.start, region.end + 1, region.merge.width)
        }
        self._counter_bytes = {
            a for first, merge in self._counters.items() for a in range(first, first + merge.width)
        }
        self._gate = gate
        self._replica = replica
        self._act = act
        self._unpublished = unpublished
        self._writes: deque[WriteToEmulator | AdoptRoom] = deque()
        self._messages: deque[ShowMessage] = deque(maxlen=MESSAGES_KEPT)
        self._dropped = 0
        self._wake = asyncio.Event()
        self._seen = 0  # the last watcher report the session merged

    def put(self, command: Command) -> None:
        if isinstance(command, ShowMessage):
            self._dropped += len(self._messages) == self._messages.maxlen
            self._messages.append(command)
        else:
            self._writes.append(command)
        self._wake.set()

    def reported(self, number: int) -> None:
        """The watcher's report NUMBER was read and merged (its bytes are the room's business now)."""
        self._seen = max(self._seen, number)

    @property
    def messages_dropped(self) -> int:
        """On-screen lines pushed out by newer ones before they were shown."""
        return self._dropped

    async def _next(self) -> Command:
        while not (self._writes or self._messages):
            self._wake.clear()
            await self._wake.wait()
        return self._writes.popleft() if self._writes else self._messages.popleft()

    async def run(self) -> None:
        """Until openMSX goes away (raises OpenMSXError then)."""
        while True:
            command = await self._next()
            try:
                await self._carry_out(command)
            except ValueError as exc:  # refused by the link's validation: report, keep playing
                log.error("could not carry out %s in openMSX: %s", type(command).__name__, exc)

    async def _carry_out(self, command: Command) -> None:
        match command:
            case AdoptRoom(reason):
                await self._adopt(reason)
            case ShowMessage(text):
                try:
                    await self._link.show_message(text)
                except CommandError as exc:  # the words are on the terminal anyway: play on
                    log.warning("openMSX could not show %r: %s", text, exc)
            case WriteToEmulator(runs, deltas) if self._gate.armed:
                await self._write(runs, deltas)

    async def _write(
        self, runs: Iterable[Run], deltas: Iterable[Delta] = (), *, adopting: bool = False
    ) -> None:
        """Write the room's values of RUNS (and add DELTAS); an adoption writes every byte, other
        writes leave the game's bytes it changed since the last merged report."""
        adds = [
            CounterDelta(first, self._counters[first].width, self._counters[first].bcd, delta)
            for first, delta in deltas
        ]
        seen = None if adopting else self._seen
        runs = self._room_values(runs)
        log.debug(
            "writing %s%s into openMSX (after report %s)", _hex(runs), f" and {adds}" if adds else "", seen
        )
        missed = await self._link.apply(split_at_regions(runs, self._regions), adds, seen)
        if missed:
            log.warning("%d shared bytes did not take in openMSX (no RAM mapped there now)", len(missed))

    def _room_values(self, runs: Iterable[Run]) -> list[Run]:
        """The room's values of these bytes now (the replica's): what was decided when the write
        was queued may have been overtaken by a local change published since. A local change
        still waiting for the publishing pace counts as the room's: it is newer (if the room's
        value wins all the same, the merge's correction follows)."""
        replica = self._replica()
        if replica is None:
            return list(runs)
        waiting = self._unpublished()
        return [
            (
                address,
                bytes(
                    waiting.get(address + i, v) for i, v in enumerate(replica.state.read(address, len(data)))
                ),
            )
            for address, data in runs
        ]

    async def _adopt(self, reason: str) -> None:
        game_values: list[Run] = []
        adopted = 0
        try:
            replica = self._replica()
            if replica is None:
                return
            written = room_bytes(replica.state)
            if written:
                await self._write(written, adopting=True)
            adopted = sum(len(data) for _, data in written)
            reads = [await self._link.read(r.start, r.size) for r in self._regions]
            game_values = unwritten_values(self._regions, reads, replica.unwritten_addresses())
        finally:  # the gate must hear the adoption ended, or it would hold the game's bytes forever
            self._act(self._gate.adopted(reason, game_values, adopted))


def _hex(runs: Iterable[Run]) -> str:
    return " ".join(f"{address:04X}:{data.hex()}" for address, data in runs)
