"""What an `OpenMSXLink` reports, as small frozen values a consumer `match`es on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LocalChanges:
    """Shared bytes that changed in this emulator during one emulated frame, with new values.

    `changes` holds (CPU address, new bytes) runs, each inside one shared region; `emutime` is
    openMSX's emulated time (seconds) of the frame that saw them, `written_at` the wall time of
    that check (seconds since the epoch): when the game made them, at the latest. `report`
    numbers the watcher's reports of this run (see `OpenMSXLink.probe`). `before` holds the same
    runs with the values of the previous check (a counter's change is the difference).
    `jumped`: the emulator jumped in time since that check (a loadstate, openMSX's reverse), so
    these bytes are the jump's, not the game's (`peer.core.emulator.openmsx_protocol.JUMP_DETECTION`).
    """

    changes: tuple[tuple[int, bytes], ...]
    emutime: float
    written_at: float
    report: int
    before: tuple[tuple[int, bytes], ...] = ()
    jumped: bool = False


@dataclass(frozen=True, slots=True)
class Logged:
    """A log line from openMSX (level info, warning, error or progress)."""

    level: str
    text: str


@dataclass(frozen=True, slots=True)
class Requested:
    """The player asked msxsync for something from inside openMSX: ``resync`` (F10)."""

    what: str


@dataclass(frozen=True, slots=True)
class Exited:
    """openMSX went away on its own (closed by the player, crashed, killed, or broke the protocol).

    `reason` is one human sentence; `stderr_tail` the last lines openMSX wrote to stderr (empty in
    attach mode, where its stderr is not ours).
    """

    reason: str
    stderr_tail: str


LinkEvent = LocalChanges | Logged | Requested | Exited
