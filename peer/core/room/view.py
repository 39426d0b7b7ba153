"""The room as the player sees it: who is there under which name, who hosts, and what to tell.

The session feeds it the roster, the mesh's events and the peers' statistics; it answers with
`Notice`s, the sentences worth telling ("player2 joined", "alice now hosts the room", "your clock
and bob's differ by 40 s") or only worth logging, and with the lines of the status display. It
remembers what a sentence needs: the names of everyone ever in the room (a split of the room drops
them from the roster, not from the players' memory), each member's standby address, the host, when
each player's last change reached us, and what was already said once (a relayed path, a clock).

Pure: no I/O; time comes in as an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from peer.console import PeerLine, chat_line, server_words
from peer.core.mesh.events import LinkLost, LinkStatistics, PathChanged, PeerAdmitted, PeerRefused
from peer.core.mesh.paths import Path
from peer.core.room.signalling import Roster
from peer.core.sync.clock import clocks_far_apart
from peer.core.sync.replica import BytesChanged, ChatReceived, Event, Repaired, RosterDiffers
from rendezvous.names import fingerprint, isolated, mixed, reserved, shown, skeletons


@dataclass(frozen=True, slots=True)
class Say:
    """Tell the player (terminal and openMSX's screen)."""

    text: str


@dataclass(frozen=True, slots=True)
class Note:
    """Worth a line in the log, not the player's attention."""

    text: str


Notice = Say | Note


class RoomView:
    """Names, host and news of one room, for the player `player` whose key is `me`."""

    def __init__(self, me: bytes, player: str) -> None:
        self.me = me
        self.player = player
        self.roster: Roster | None = None
        self.host: bytes | None = None
        self.names: dict[bytes, str] = {}  # the roster's members now
        self.known_names: dict[bytes, str] = {}  # everyone ever in the room
        self.standby: dict[bytes, str | None] = {}  # each member's standby rendezvous, if any
        self.last_change: dict[bytes, float] = {}  # when each player's last change reached us
        self.marked: set[bytes] = set()  # keys whose names are shown with their fingerprint
        self._told_relayed: set[bytes] = set()
        self._told_clock: set[bytes] = set()

    def name(self, key: bytes) -> str:
        """KEY's name for the player; with its fingerprint when it looks like another's (issue 30,
        F8: the rendezvous should refuse a look-alike, but the roster is the rendezvous's word)."""
        if key == self.me:
            return isolated(self.player)
        name = isolated(self._plain_name(key))
        return f"{name} ({fingerprint(key)})" if key in self.marked else name

    def _plain_name(self, key: bytes) -> str:
        return self.names.get(key) or self.known_names.get(key, fingerprint(key))

    @property
    def room(self) -> str | None:
        return self.roster.room if self.roster is not None else None

    @property
    def first_member(self) -> bytes | None:
        """Who started the room (the rendezvous's `host`; its game is the room's)."""
        return self.roster.host if self.roster is not None else None

    def alone(self) -> bool:
        """Whether the roster lists nobody but us."""
        return self.roster is not None and set(self.roster.keys) <= {self.me}

    # ---- the roster and the host --------------------------------------------------------------

    def roster_changed(self, roster: Roster, *, where: Callable[[], str]) -> list[Notice]:
        """A new roster; `where()` says where the room lives (`server`), for the first one."""
        previous, first = self.names, self.roster is None
        self.roster = roster
        self.names = {member.key: shown(member.name) for member in roster.members}
        self.known_names.update(self.names)
        self.marked = self._look_alikes()
        self.standby = {member.key: member.standby for member in roster.members}
        notices: list[Notice] = []
        if self.host != roster.host and roster.host in self.names:
            self.host = roster.host
            if first:
                notices.append(Say(f"you are {self.player}, in room {roster.room} ({where()})"))
            else:
                notices.append(Note(f"the room's first member is now {self.name(roster.host)}"))
        notices += [Say(f"{self.name(key)} left") for key in previous.keys() - self.names.keys()]
        return notices

    def _look_alikes(self) -> set[bytes]:
        """The keys, ours aside, of everyone ever in the room whose name looks like another key's
        (`rendezvous.names.skeletons`), like the program's own words, or mixes Latin letters with
        another script's (`rendezvous.names.mixed`: look-alikes no table lists)."""
        named = {**self.known_names, self.me: self.player}
        holders: dict[tuple[int, str], set[bytes]] = {}
        for key, name in named.items():
            for kind, skeleton in enumerate(skeletons(name)):
                holders.setdefault((kind, skeleton), set()).add(key)
        shared = {key for keys in holders.values() if len(keys) > 1 for key in keys}
        suspect = {key for key, name in named.items() if reserved(name) or mixed(name)}
        return (shared | suspect) - {self.me}

    def host_moved(self, host: bytes | None) -> list[Notice]:
        """The room moved to another host (a takeover): say who hosts it now."""
        if host is None or host == self.host:
            return []
        self.host = host
        return [Say("you now host the room" if host == self.me else f"{self.name(host)} now hosts the room")]

    def server(self, *, hosting: bool, unreachable: bool, url: str) -> str:
        """Where the room lives, in the player's words (`peer.console.server_words`)."""
        if unreachable:
            return "server unreachable, retrying"
        host = self.host
        return server_words(
            hosting=hosting,
            host_name=self.name(host) if host is not None else None,
            host_standby=self.standby.get(host) if host is not None else None,
            url=url,
        )

    # ---- the mesh's events --------------------------------------------------------------------

    def event(self, event: Event, now: float) -> list[Notice]:
        """What a mesh event means to the player (`now`: monotonic seconds)."""
        match event:
            case BytesChanged(peer):
                self.last_change[peer] = now
            case PeerAdmitted(peer):
                return [Say(f"{self.name(peer)} joined")]
            case PeerRefused(peer, "different-game", detail):
                return [Note(f"not sharing with {self.name(peer)}: it {detail}")]
            case LinkLost(peer, reason):
                return [Note(f"connection to {self.name(peer)} lost: {reason}")]
            case PathChanged(peer, Path.RELAYED) if peer not in self._told_relayed:
                self._told_relayed.add(peer)  # once per player and session: it is news, not noise
                return [Say(f"{self.name(peer)} can only be reached through the server's relay")]
            case ChatReceived(peer, text):  # always with the fingerprint: who said it matters
                return [Say(chat_line(self._plain_name(peer), fingerprint(peer), text))]
            case Repaired(peer):
                return [Note(f"repaired differences with {self.name(peer)}")]
            case RosterDiffers(peer, True):
                return [Say(f"{self.name(peer)} and you see the same players again")]
            case RosterDiffers(peer, False):
                return [Say(f"{self.name(peer)} sees other players than you: the server may split the room")]
        return []

    # ---- the peers' statistics ----------------------------------------------------------------

    def clock_warnings(self, statistics: Mapping[bytes, LinkStatistics]) -> list[Notice]:
        """Once per peer, when its clock and ours are far apart: writes stamped past a
        receiver's clock bound wait there, or are refused (`peer.core.sync.clock`)."""
        notices: list[Notice] = []
        for key, stats in statistics.items():
            skew = stats.sync.skew if stats.sync is not None else None
            if skew is None or not clocks_far_apart(skew) or key in self._told_clock:
                continue
            self._told_clock.add(key)
            faster = "yours" if skew < 0 else f"{self.name(key)}'s"
            notices.append(
                Say(
                    f"your clock and {self.name(key)}'s differ by {abs(skew):.0f} s ({faster} is ahead); "
                    "set both to the time from the internet, or some writes will be late or refused"
                )
            )
        return notices

    def peer_lines(
        self, statistics: Mapping[bytes, LinkStatistics], admitted: Iterable[bytes], now: float
    ) -> tuple[PeerLine, ...]:
        """One line per peer for the status display and the `peers` command."""
        synced, lines = set(admitted), []
        for key, stats in statistics.items():
            rtt = stats.sync.rtt if stats.sync is not None else None
            changed = self.last_change.get(key)
            path = stats.path.value if stats.path is not None else None
            ago = None if changed is None else now - changed
            lines.append(PeerLine(self.name(key), key in synced, rtt, ago, path))
        return tuple(lines)
