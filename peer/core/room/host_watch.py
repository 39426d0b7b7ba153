"""The takeover watch: when to look for the room elsewhere, where to go, and when to host it.

Owns the timing of issue 17's rules (the rules themselves are `peer.core.room.takeover`), which
`peer.host_role.HostRole` used to read off the clock inside a polling loop. The driver looks at the
signalling connection every TAKEOVER_CHECK seconds (`get_timer`), tells the watch what it saw
(`seen`), and calls `handle_timer(now)`; it carries out the actions, and answers a `Probe` with
`probed` and a successful `TakeOver` with `took_over`.

- The player hears of the rendezvous being gone after UNREACHABLE_AFTER (`ServerLost`), and of its
  return at once (`ServerBack`).
- A **standalone** rendezvous (the welcome's `hosted_by` is None) is never replaced: the
  signalling client retries it by itself. Nothing is probed.
- In a **player-hosted** room, a host probes every PROBE_EVERY for a rendezvous of its room that
  ranks before its own, and a peer that lost the rendezvous probes every check: the original
  rendezvous and every member's standby URL (`Probe`). It goes where `takeover.move_to` says
  (`Go`); a host that moves stops hosting, and its members look for the room the same way.
- A peer that found the room nowhere for TAKEOVER_AFTER, and whose set of live links has held
  still for STABLE_FOR (links that died with the same cable go silent a heartbeat apart), elects
  `takeover.successor`: itself (`TakeOver`) or another (`Go` to its standby URL). Never itself
  when it has no live link.
- A move to a URL is not repeated within RETARGET_GRACE (connecting and the handshake take time).

Pure: no I/O, no clock. Time comes in as `now` (monotonic seconds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from peer.core.room import takeover
from peer.core.room.signalling import Roster
from peer.core.room.takeover import Sighting

TAKEOVER_CHECK = 1.0  # the signalling connection is looked at this often
UNREACHABLE_AFTER = 3.0  # seconds without the rendezvous before the player is told
TAKEOVER_AFTER = 3.0  # seconds without the rendezvous (and without the room anywhere) before electing
STABLE_FOR = 2.0  # the live links must have held still this long: more than a heartbeat (1 s)
PROBE_EVERY = 2.0  # a host that is fine looks for a better rendezvous of its room this often
RETARGET_GRACE = 6.0  # a fresh retarget to the same URL is left to finish (connect + handshake)


@dataclass(frozen=True, slots=True)
class Connection:
    """What the signalling connection says, and whether we host a rendezvous."""

    joined: bool  # in the room at a rendezvous now
    welcomed: bool  # any rendezvous ever welcomed us (before that, `hosted_by` means nothing)
    hosted_by: bytes | None  # whose program the rendezvous we are (or were last) in is
    hosting: bool = False


# ---- news for the session (what the player hears) -----------------------------------------


@dataclass(frozen=True, slots=True)
class ServerLost:
    """The rendezvous has been unreachable for UNREACHABLE_AFTER."""


@dataclass(frozen=True, slots=True)
class ServerBack:
    """The rendezvous is reachable again (after `ServerLost`)."""


@dataclass(frozen=True, slots=True)
class Moved:
    """The room is now hosted by `host` (None: a standalone rendezvous)."""

    host: bytes | None


News = ServerLost | ServerBack | Moved


# ---- what the driver does --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """Ask each rendezvous in `urls` for our room (`GET /api/rooms/{room}`); answer with `probed`."""

    urls: tuple[str, ...]
    room: str
    game: str


@dataclass(frozen=True, slots=True)
class Go:
    """Join the room at `url` (hosted by `host`); stop hosting ours if we do."""

    url: str
    host: bytes | None


@dataclass(frozen=True, slots=True)
class TakeOver:
    """Host the room here; answer with `took_over` once our rendezvous runs."""


Action = News | Probe | Go | TakeOver


class HostWatch:
    """One peer's watch over who hosts its room; see the module docstring."""

    def __init__(self, me: bytes, *, origin: str, game: str, now: float) -> None:
        self.me = me
        self.origin = origin  # the rendezvous the session started with
        self.game = game
        self.unreachable = False  # the player was told
        self._connection = Connection(joined=True, welcomed=False, hosted_by=None)
        self._roster: Roster | None = None
        self._standby: dict[bytes, str] = {}  # every member's standby URL ever seen in the room
        self._lost_since: float | None = None
        self._probed_at: float | None = None
        self._checked_at = now  # the check that asked for the probe under way
        self._next_check: float | None = now + TAKEOVER_CHECK  # None while a probe is out
        self._retargeted: tuple[str, float] | None = None
        self._survivors: tuple[frozenset[bytes], float] = (frozenset(), 0.0)

    # ---- inputs --------------------------------------------------------------------------------

    def seen(self, connection: Connection, roster: Roster | None) -> None:
        """What the signalling connection says now, and the room's last roster."""
        self._connection = connection
        if roster is not None:
            self._roster = roster
            for member in roster.members:
                if member.standby is not None and member.key != self.me:
                    self._standby[member.key] = member.standby

    def get_timer(self) -> float | None:
        """When to look at the connection next (None while a probe is out)."""
        return self._next_check

    def handle_timer(self, now: float) -> list[Action]:
        """Look at what `seen` last said: tell the player, and probe when it is time."""
        if self._next_check is None or now < self._next_check:
            return []
        actions = self._reachability(now)
        self._next_check = now + TAKEOVER_CHECK
        if not self._wants_probe(now):
            return actions
        self._probed_at = now
        if self._roster is None:
            return actions  # (no roster, no room to look for)
        self._checked_at, self._next_check = now, None
        return [*actions, Probe(self._urls(), self._roster.room, self.game)]

    def probed(self, seen: Iterable[Sighting], linked: Iterable[bytes], now: float) -> list[Action]:
        """Where the probe found our room (SEEN), and the peers we have a live link with now."""
        checked = self._checked_at  # (the rules' time is the check's; a move is stamped now)
        self._next_check = now + TAKEOVER_CHECK
        connection = self._connection
        target = takeover.move_to(connection.hosted_by, joined=connection.joined, me=self.me, seen=seen)
        if target is not None:
            return self._go(target.url, target.hosted_by, now)
        if self._lost_since is not None and checked - self._lost_since >= TAKEOVER_AFTER:
            return self._elect(frozenset(linked), checked)
        return []

    def took_over(self, url: str, now: float) -> list[Action]:
        """Our rendezvous runs at URL: the room moves there."""
        self._retargeted = (url, now)
        return [Moved(self.me)]

    # ---- the rules' timing -----------------------------------------------------------------------

    def _reachability(self, now: float) -> list[Action]:
        if self._connection.joined:
            # Back in the room: the survivors seen while lost say nothing about the next loss
            # (their clock would otherwise count the time we were in, links that came and went).
            self._lost_since, self._survivors = None, (frozenset(), 0.0)
            if self.unreachable:
                self.unreachable = False
                return [ServerBack()]
            return []
        if self._lost_since is None:
            self._lost_since = now
        if not self.unreachable and now - self._lost_since >= UNREACHABLE_AFTER:
            self.unreachable = True
            return [ServerLost()]
        return []

    def _wants_probe(self, now: float) -> bool:
        connection = self._connection
        if not connection.welcomed or connection.hosted_by is None:
            return False  # a standalone rendezvous is never replaced: the client retries it
        if not connection.joined:
            return True  # out of the room: look for it
        # a member in the room leaves it to its host; the host looks out for a better rendezvous
        return connection.hosting and (self._probed_at is None or now - self._probed_at >= PROBE_EVERY)

    def _urls(self) -> tuple[str, ...]:
        """Where the room may be: the original rendezvous and every member's standby URL."""
        urls = [self.origin.rstrip("/"), *(url.rstrip("/") for url in self._standby.values())]
        return tuple(dict.fromkeys(urls))

    def _elect(self, linked: frozenset[bytes], now: float) -> list[Action]:
        if linked != self._survivors[0]:
            self._survivors = (linked, now)
        if now - self._survivors[1] < STABLE_FOR or self._roster is None:
            return []
        gone = self._connection.hosted_by
        chosen = takeover.successor(self._roster.members, gone_host=gone, me=self.me, connected=linked)
        if chosen is None:
            return []
        if chosen.key == self.me:
            return [TakeOver()]
        if chosen.standby is not None:
            return self._go(chosen.standby, chosen.key, now)
        return []  # pragma: no cover (`successor` only elects members with a standby URL)

    def _go(self, url: str, host: bytes | None, now: float) -> list[Action]:
        last = self._retargeted
        if last is not None and last[0] == url and now - last[1] < RETARGET_GRACE:
            return []  # that move is still under way
        self._retargeted = (url, now)
        return [Moved(host), Go(url, host)]
