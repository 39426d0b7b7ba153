"""When a room's roster goes out: `ready` changes within `interval` of one another become one roster.

A roster (PROTOCOL.md, "Rooms") lists every member and up to 64 past ones, a few KB, and the room
rules (`rendezvous.rooms`) return one for every member after every join, leave, kick and `ready`:
toggling `ready` 57 times a second sent 307 KiB/s to every member (issue 29, F7). What each change
costs is charged to whoever made it (`rendezvous.fairness.Sources.admit_roster_change`); this
module bounds what a room's members receive, whoever makes the changes. `RosterPacer` lets a
room's first change after a quiet `interval` go out at once and folds the changes that follow
within `interval` into one roster, sent when it is over, of the room as it is then. Changes of
who is in the room (joins, leaves, kicks) go out at once whatever the pace: msxsync peers read the
membership from the rosters only, and drop signals from a key their roster does not list yet;
those changes are few (each is charged, and a join costs a connection). So `ready` and its like
reach a member at most once per `interval`.

Pure: no asyncio, aiohttp, sockets or clock (`now` comes in); it must not import any of them.
"""

from __future__ import annotations

from collections.abc import Collection

INTERVAL = 0.2  # seconds: at most five rosters a second reach a member


class RosterPacer:
    """Which rooms' rosters are due now, which wait, and until when (`get_timer`)."""

    def __init__(self, interval: float = INTERVAL) -> None:
        if interval < 0:
            raise ValueError("interval must not be negative")
        self.interval = interval
        self.sent = 0  # rosters sent (one per room, whatever its number of members) ...
        self.folded = 0  # ... and changes folded into a later one
        self._last: dict[str, float] = {}  # room -> when its last roster went out
        self._waiting: dict[str, float] = {}  # room -> when its next roster is due

    def changed(self, room: str, now: float, *, at_once: bool = False) -> bool:
        """The roster of `room` changed: True when it is to go out now; else it waits.
        `at_once`: a member came or went, which goes out now whatever the pace (a newcomer's
        offers reach the others right after its `joined`: members who did not know it yet
        dropped them)."""
        if at_once:
            self._waiting.pop(room, None)
            self._last[room] = now
            self.sent += 1
            return True
        if room in self._waiting:
            self.folded += 1
            return False
        last = self._last.get(room)
        if last is None or now - last >= self.interval:
            self._last[room] = now
            self.sent += 1
            return True
        self._waiting[room] = last + self.interval
        return False

    def get_timer(self) -> float | None:
        """When the next waiting roster is due, or None."""
        return min(self._waiting.values(), default=None)

    def due(self, now: float) -> list[str]:
        """The rooms whose waiting roster is to go out now (sent: they wait no more)."""
        rooms = [room for room, when in self._waiting.items() if when <= now]
        for room in rooms:
            del self._waiting[room]
            self._last[room] = now
            self.sent += 1
        return rooms

    def forget_rooms(self, existing: Collection[str]) -> None:
        """Rooms that are gone cost no memory (a room opened again starts quiet)."""
        for table in (self._last, self._waiting):
            for name in [n for n in table if n not in existing]:
                del table[name]

    def statistics(self) -> dict[str, int]:
        return {"sent": self.sent, "folded": self.folded, "waiting": len(self._waiting)}
