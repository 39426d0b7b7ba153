"""Publish gating: what a peer may publish when, what it holds during an adoption, and what its
emulator must be given on arming.

The arming rule (`peer.core.emulator.arming`) says *when* a peer shares; this module applies it to the flow
of bytes:
- a report of local changes (one watcher check) updates the armed-when bytes, may disarm or ask
  for a `Check` of the emulator, and its shared bytes are published only when the report was made
  after the check that armed and no adoption is under way;
- remote changes go into the emulator only while armed (disarmed, the game is on its title screen
  or booting, and adoption will bring everything in on re-arming);
- an adoption (`AdoptRoom`, on arming and on a manual resync) is carried out by the session: it
  writes `room_bytes(state)` into the emulator, reads the regions, and hands the game's values of
  the bytes nobody has written to `adopted`, which publishes them. During a manual resync the game
  is in play: its changes are held and, once the room's bytes are in, written back and published
  (they are newer). On arming they are the boot's or the title screen's: dropped.
- a jump in time (a loadstate, openMSX's reverse; the watcher's report says so, see
  `peer.core.emulator.openmsx_protocol.JUMP_DETECTION`): the room wins. The jump's bytes are dropped, never
  published, and an adoption puts the room's bytes back; what the game writes until it is done
  is held, as during a manual resync (it is newer than the room's).

Counters (`add` regions) never travel as bytes: a report's counter bytes become deltas (new minus
old, `peer.core.sync.merge.delta`), published as such and held as such; remote counter changes reach
the emulator as deltas too (`WriteToEmulator.deltas`).

Pure: no I/O, no clock. Every method returns the `Action`s to carry out, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from games.definition import ArmedWhen, Region
from peer.core.emulator import arming
from peer.core.emulator.arming import Arming, Check
from peer.core.sync import merge as rules
from peer.core.sync.state import Delta, Layout, Run, SharedState, byte_values

__all__ = [
    "AdoptRoom",
    "Check",
    "Gate",
    "Publish",
    "Tell",
    "WriteToEmulator",
    "room_bytes",
    "sharing_words",
    "unwritten_values",
]

ARMING = "armed"  # the reason of the adoption that arming starts
SHARING = "sharing with the room"  # the first words a player reads once their game shares
JUMPED_WORDS = "you loaded a state; kept the room's items"  # after a loadstate or a rewind


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish these local bytes and counter deltas; `written_at` is when the game made them
    (None: now)."""

    runs: tuple[Run, ...]
    written_at: float | None = None
    deltas: tuple[Delta, ...] = ()


@dataclass(frozen=True, slots=True)
class WriteToEmulator:
    """Write these bytes into the emulator and add these deltas to its counters (the room's, so
    never reported back as local)."""

    runs: tuple[Run, ...]
    deltas: tuple[Delta, ...] = ()


@dataclass(frozen=True, slots=True)
class AdoptRoom:
    """Write the room's bytes into the emulator, read the regions, then call `Gate.adopted`."""

    reason: str


@dataclass(frozen=True, slots=True)
class Tell:
    """A line for the player (terminal and emulator screen)."""

    text: str


Action = Check | Publish | WriteToEmulator | AdoptRoom | Tell


class Gate:
    """One peer's gate between its emulator and the room."""

    def __init__(self, layout: Layout, armed_when: ArmedWhen | None, arm_after: float | None) -> None:
        self.layout = layout
        self.arming = Arming(armed_when, arm_after)
        self.watched = tuple(armed_when.addresses) if armed_when is not None else ()
        self.memory: dict[int, int] = {}
        """The latest values of the armed-when bytes."""
        self._adoptions = 0  # asked for and not finished (each one's `adopted` comes, in order)
        self._holding = False
        self._held: dict[int, int] = {}
        self._held_deltas: dict[int, int] = {}

    @property
    def armed(self) -> bool:
        return self.arming.armed

    @property
    def adopting(self) -> bool:
        return self._adoptions > 0

    # ---- inputs --------------------------------------------------------------------------------

    def report(
        self,
        changes: Iterable[Run],
        emutime: float,
        written_at: float | None,
        number: int,
        before: Iterable[Run] = (),
        *,
        jumped: bool = False,
    ) -> list[Action]:
        """The watcher's report number NUMBER: local changes seen at `emutime`, made by `written_at`
        (`before`: the same runs as the previous check saw them). A report that `jumped` (a
        loadstate, openMSX's reverse) holds the jump's bytes, not the game's: they are never
        published; the room's bytes go back into the emulator instead (the room wins)."""
        changes = list(changes)
        for address, data in changes:
            for offset, value in enumerate(data):
                if address + offset in self.watched:
                    self.memory[address + offset] = value
        shared, deltas = self.split(changes, before)
        known = all(address in self.memory for address in self.watched)  # (a probe tells them all)
        actions = self._follow(self.arming.observe(self.memory, emutime, number)) if known else []
        if jumped:
            return actions + self._follow(self.arming.jumped(number))
        if not (shared or deltas) or not self.arming.publishes(number):
            return actions  # before the check that armed, or disarming: boot or title screen
        if not self.adopting:
            actions.append(Publish(tuple(shared), written_at, tuple(deltas)))
        elif self._holding:
            self._held.update(byte_values(shared))
            for first, delta in deltas:
                self._held_deltas[first] = self._held_deltas.get(first, 0) + delta
        return actions

    def split(self, changes: Iterable[Run], before: Iterable[Run]) -> tuple[list[Run], list[Delta]]:
        """Shared bytes outside counters as runs, and each counter's change as a delta (a byte with
        no old value is taken as changed from 0, as an unwritten counter shows)."""
        layout = self.layout
        old = byte_values(before)
        runs: list[tuple[int, bytearray]] = []
        deltas: dict[int, int] = {}
        for address, data in changes:
            for offset, value in enumerate(data):
                at = address + offset
                if layout.index(at) < 0:
                    continue
                first = layout.counter_of(at)
                if first is None:
                    if runs and runs[-1][0] + len(runs[-1][1]) == at:
                        runs[-1][1].append(value)
                    else:
                        runs.append((at, bytearray([value])))
                else:
                    merge = layout.counters[first]
                    change = rules.delta(at - first, old.get(at, 0), value, merge)
                    deltas[first] = deltas.get(first, 0) + change
        return [(a, bytes(d)) for a, d in runs], [(f, d) for f, d in sorted(deltas.items()) if d]

    def probed(self, memory: Mapping[int, int], emutime: float, last_report: int) -> list[Action]:
        """What the running emulator said just now (see `arming.Check`)."""
        self.memory.update(memory)
        return self._follow(self.arming.check(self.memory, emutime, last_report))

    def room_is_ready(self) -> list[Action]:
        """The room's state is here, or this peer knows it is alone."""
        return self._follow(self.arming.room_is_ready())

    def resync(self) -> list[Action]:
        return self._follow(self.arming.resync())

    def remote_changes(self, runs: Sequence[Run], deltas: Sequence[Delta] = ()) -> list[Action]:
        """Bytes other peers' writes changed in the replica, and how far counters moved."""
        if not self.armed or not (runs or deltas):
            return []
        return [WriteToEmulator(tuple(runs), tuple(deltas))]

    def adopted(self, reason: str, game_values: Sequence[Run], adopted: int) -> list[Action]:
        """The room's `adopted` bytes are in the emulator; `game_values` are its bytes nobody wrote."""
        self._adoptions = max(0, self._adoptions - 1)
        actions: list[Action] = []
        if self.adopting:  # another adoption follows: it publishes, once the room's bytes are in
            return []  # (and tells: one message, not one per adoption)
        if game_values and self.armed:
            game_runs, game_deltas = self.split(game_values, ())  # (an unwritten counter shows 0)
            actions.append(Publish(tuple(game_runs), None, tuple(game_deltas)))
        held, self._held = sorted(self._held.items()), {}
        held_deltas, self._held_deltas = tuple(sorted(self._held_deltas.items())), {}
        if (held or held_deltas) and self.armed:
            runs = tuple((address, bytes([value])) for address, value in held)
            # the game's newer bytes win; its counts add to the room's it was just given
            actions += [WriteToEmulator(runs, held_deltas), Publish(runs, None, held_deltas)]
        actions.append(Tell(sharing_words(reason, adopted)))
        return actions

    def waiting_for(self) -> list[str]:
        return self.arming.waiting_for()

    def _follow(self, decisions: Iterable[arming.Action]) -> list[Action]:
        actions: list[Action] = []
        for decision in decisions:
            match decision:
                case arming.Adopt(reason):
                    self._adoptions += 1
                    self._holding = reason != ARMING
                    if not self._holding:
                        self._held.clear()
                        self._held_deltas.clear()
                    actions.append(AdoptRoom(reason))
                case arming.Disarm(reason):
                    self._held.clear()
                    self._held_deltas.clear()
                    actions.append(Tell(f"paused sharing: {reason}"))
                case Check():
                    actions.append(Check())
        return actions


def sharing_words(reason: str, adopted: int) -> str:
    """What the player reads once an adoption is done (ARMING's, or a manual resync's)."""
    if reason == arming.JUMPED:
        return JUMPED_WORDS
    if reason != ARMING:
        return "resynced: you have the room's items"
    return SHARING + ("; you got the room's items" if adopted else "")


def room_bytes(state: SharedState) -> list[Run]:
    """Every byte some peer has written (counters as the value they show), as runs: what an
    adopting emulator must take."""
    return state.written_runs()


def unwritten_values(
    regions: Sequence[Region], reads: Sequence[bytes], unwritten: Iterable[int]
) -> list[Run]:
    """The emulator's values (REGIONS read as READS) of the addresses nobody has written."""
    wanted = set(unwritten)
    values: list[Run] = []
    for region, data in zip(regions, reads, strict=True):
        if len(data) != region.size:
            raise ValueError(f"read {len(data)} bytes of a {region.size}-byte region")
        values += [
            (region.start + i, data[i : i + 1]) for i in range(region.size) if region.start + i in wanted
        ]
    return values
