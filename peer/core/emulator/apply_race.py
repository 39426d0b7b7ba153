"""Remote bytes written into the emulator while a report of the game's own writes was unread.

The race (issue 31, found by the crash test's stops): the watcher in openMSX reports the game's
writes (report N), and the report waits in the control stream while msxsync writes remote bytes
into the emulator (an apply). If the apply's values were decided before report N was read, and
openMSX ran the apply after it made report N, the apply overwrote the game's newer bytes. Report N
is then read and published, and the room keeps the game's bytes (they are newer), but this
emulator shows the apply's: a newer write taken back on one screen, and the replicas differ.

So the emulator is given the room's value again (a refresh) for every byte of a report that
such an apply wrote over. An apply is *resolved* when its values are taken from the replica,
after report `seen` at most; openMSX tells after which report it ran it (`ran_after`). A report
numbered in (seen, ran_after] was made before the apply ran but not yet merged when its values
were decided. The report may be read before or after the apply's reply comes back, so both orders
are checked. Counters are never refreshed: their deltas add up in the emulator, they overwrite
nothing.

Pure: report numbers and addresses in, addresses to refresh out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

KEPT = 16  # finished applies (and reports read during an apply) remembered


@dataclass(slots=True)
class _Apply:
    seen: int  # the last report merged when the apply's values were taken from the replica
    addresses: frozenset[int]
    ran_after: int | None = None  # openMSX ran it after this report (None: no reply yet)
    reports: list[tuple[int, frozenset[int]]] = field(default_factory=list)  # read meanwhile


class ApplyRace:
    """Which bytes an apply may have written over a game's unread report."""

    def __init__(self) -> None:
        self.seen = 0  # the last report read and merged
        self._in_flight: dict[int, _Apply] = {}
        self._done: deque[_Apply] = deque(maxlen=KEPT)
        self._next = 1

    def resolving(self, addresses: Iterable[int]) -> int:
        """An apply of these addresses takes its values from the replica now: its token."""
        token, self._next = self._next, self._next + 1
        self._in_flight[token] = _Apply(self.seen, frozenset(addresses))
        return token

    def applied(self, token: int, ran_after: int) -> set[int]:
        """openMSX ran the apply after report RAN_AFTER: the bytes to refresh now."""
        apply = self._in_flight.pop(token)
        apply.ran_after = ran_after
        self._done.append(apply)
        refresh: set[int] = set()
        for number, addresses in apply.reports:
            if apply.seen < number <= ran_after:
                refresh |= addresses & apply.addresses
        apply.reports.clear()
        return refresh

    def failed(self, token: int) -> None:
        """The apply never ran (openMSX refused it or went away)."""
        self._in_flight.pop(token, None)

    def reported(self, number: int, addresses: Iterable[int]) -> set[int]:
        """Report NUMBER (these shared bytes, counters left out) was read and merged: the bytes
        to refresh now (more may follow from `applied`)."""
        self.seen = max(self.seen, number)
        written = frozenset(addresses)
        refresh: set[int] = set()
        for apply in self._in_flight.values():
            if apply.seen < number and written & apply.addresses:
                apply.reports.append((number, written))
        for apply in self._done:
            if apply.ran_after is not None and apply.seen < number <= apply.ran_after:
                refresh |= written & apply.addresses
        return refresh
