"""When a peer may publish: the arming rule that keeps a booting game from wiping the room.

A game clears its RAM at boot and sits on a title screen with default values; publishing those
would overwrite everybody's progress. So a peer is *armed* only when all of these hold:
- it has the room's state, or knows it is alone (`room_ready`);
- the definition's armed-when condition holds on the emulator's RAM (when there is one);
- `arm_after` emulated seconds have passed since power-on (when given).

Only the running emulator decides arming. Reports of changes are what the emulator said a moment
ago (and a report can be a leftover of an earlier run: openMSX saves settings between runs), so an
observation that would arm only asks for a check (`Check`): the peer reads the armed-when bytes and
the emulated time from the emulator itself and feeds them to `check`, which arms when they agree.
Arming remembers how many reports the emulator had made when it armed (`armed_after_report`): a
report made before is boot or title-screen noise and is never published (`publishes`). (Report
numbers, not emulated time: a loaded savestate or openMSX's reverse moves emulated time back.)

On arming the peer first *adopts* the room: every byte some peer has written goes into the
emulator, overwriting what the boot or title screen put there; the bytes nobody has written yet are
then filled from the game (published as local changes). From then on local changes are published and
remote ones applied. When the condition stops holding (back to the title screen) the peer disarms
and later re-arms the same way. A manual resync re-adopts on demand. When the emulator jumps in
time (a loadstate, openMSX's reverse) the room wins: the jump's bytes are never published, and the
peer re-adopts (`jumped`).

Pure: the peer feeds observations in and acts on the returned `Action`s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from games.definition import ArmedWhen


class Phase(Enum):
    DISARMED = "disarmed"
    ARMED = "armed"


JUMPED = "jumped in time"  # the reason of the adoption a loadstate or openMSX's reverse starts


@dataclass(frozen=True, slots=True)
class Action:
    """Base of what the arming rule asks the peer to do."""


@dataclass(frozen=True, slots=True)
class Adopt(Action):
    """Write the room's state into the emulator, then publish the game's unwritten bytes."""

    reason: str


@dataclass(frozen=True, slots=True)
class Disarm(Action):
    reason: str


@dataclass(frozen=True, slots=True)
class Check(Action):
    """Everything says the peer may arm: read the armed-when bytes and the emulated time from the
    emulator now and pass them to `Arming.check`."""


@dataclass(slots=True)
class Arming:
    armed_when: ArmedWhen | None
    arm_after: float | None = None
    phase: Phase = Phase.DISARMED
    room_ready: bool = False
    condition_holds: bool = False
    emulated_time: float = 0.0
    armed_after_report: int | None = None
    """The number of the emulator's last report before the check that armed (None if disarmed)."""

    def __post_init__(self) -> None:
        if self.arm_after is not None and self.arm_after < 0:
            raise ValueError("--arm-after must not be negative")
        self.condition_holds = self.armed_when is None

    @property
    def armed(self) -> bool:
        return self.phase is Phase.ARMED

    def waiting_for(self) -> list[str]:
        """What still keeps this peer from arming, in a player's words for the status line
        ("waiting for " + ", ".join(...)): no addresses, no rule syntax."""
        reasons = []
        if not self.room_ready:
            reasons.append("the room's items")
        if not self.condition_holds:
            reasons.append("the game to start")
        if self.arm_after is not None and self.emulated_time < self.arm_after:
            reasons.append(f"the game to boot ({math.ceil(self.arm_after - self.emulated_time)} s)")
        return reasons

    def room_is_ready(self) -> list[Action]:
        self.room_ready = True
        return self._update(checked=False)

    def observe(self, memory: dict[int, int], emulated_time: float, report: int) -> list[Action]:
        """Feed what report number `report` says of the armed-when bytes and the emulated time.

        It can disarm, never arm: when it would, the answer is `Check`. A report made before the
        check that armed is old news and changes nothing."""
        if self.armed_after_report is not None and report <= self.armed_after_report:
            return []
        self._feed(memory, emulated_time)
        return self._update(checked=False)

    def check(self, memory: dict[int, int], emulated_time: float, last_report: int) -> list[Action]:
        """Feed the armed-when bytes and the emulated time just read from the running emulator,
        with the number of the last report it had made by then."""
        self._feed(memory, emulated_time)
        return self._update(checked=True, last_report=last_report)

    def publishes(self, report: int) -> bool:
        """Whether the local changes of report number `report` are the game's, to publish: armed,
        and made after the check that armed (earlier ones are the boot or the title screen)."""
        return self.armed_after_report is not None and report > self.armed_after_report

    def resync(self) -> list[Action]:
        """Manual resync: re-adopt the room's state now if armed."""
        return [Adopt("manual resync")] if self.armed else []

    def jumped(self, report: int) -> list[Action]:
        """Report number `report` says the emulator jumped in time (a loadstate, reverse): the
        room wins, so re-adopt its state if armed. (A jump reported before the check that armed
        is covered by that arming's own adoption.)"""
        return [Adopt(JUMPED)] if self.publishes(report) else []

    def _feed(self, memory: dict[int, int], emulated_time: float) -> None:
        if not emulated_time >= 0:  # (refuses nan too)
            raise ValueError(f"bad emulated time {emulated_time}")
        self.emulated_time = emulated_time
        if self.armed_when is not None:
            missing = [a for a in self.armed_when.addresses if a not in memory]
            if missing:
                raise ValueError(f"no value given for {missing[0]:#06x}")
            self.condition_holds = self.armed_when.holds(memory)

    def _update(self, *, checked: bool, last_report: int = 0) -> list[Action]:
        ready = not self.waiting_for()
        if ready and self.phase is Phase.DISARMED:
            if not checked:
                return [Check()]
            self.phase, self.armed_after_report = Phase.ARMED, last_report
            return [Adopt("armed")]
        if not ready and self.phase is Phase.ARMED and not self.condition_holds:
            self.phase, self.armed_after_report = Phase.DISARMED, None
            return [Disarm("the game is not in play")]
        return []
