"""Who hosts the room: the successor when the hosting player is gone, and where a room that a
network split left on two rendezvous comes together again. Rules every peer applies the same way
without talking about them (issue 17). Pure: no I/O, no clock.

The rendezvous lists members in join order, each with the standby URL where it would host, and
its welcome says whose program it is (`hosted_by`; None for a standalone server).

- **Successor** (`successor`): only for a player-hosted room. When a peer has lost both the
  rendezvous and its direct link to the hosting player, the earliest joiner among the members it
  can reach *now* (itself included) that offered a standby URL hosts next. A peer with no live link
  to anyone elects nobody, least of all itself: from where it stands the host and everybody else
  are equally gone, and a room of one would split the room for good. It waits and keeps looking.
- **Which rendezvous stays** (`rank`, `stays`): a standalone server before any player's program
  (it is never replaced), then the smallest `hosted_by` key. A total order on what a rendezvous
  *is*, not on what anyone sees of it, so the two hosts of a split agree however their views
  differ, and no two of them can ever swap places.
- **Where to be** (`move_to`): a peer that finds its room on a rendezvous that ranks before the one
  it is in (or that is in none) goes there. Once everyone can see everyone, every host but the
  first-ranked moves, its members follow, and the room is whole again.
- **Room info** (`parse_room_info`): what `GET /api/rooms/{name}` answers, judged like any other
  input from a server that may be broken.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from rendezvous import wire


class Candidate(Protocol):
    @property
    def key(self) -> bytes: ...

    @property
    def standby(self) -> str | None: ...


C = TypeVar("C", bound=Candidate)


def successor(
    members: Sequence[C], *, gone_host: bytes | None, me: bytes, connected: Iterable[bytes]
) -> C | None:
    """The member that takes over hosting, or None when nobody should: the host is not gone (or
    is us), or we have no live link to anyone (then the one cut off may well be us)."""
    linked = set(connected) - {me}
    if gone_host is None or gone_host == me or gone_host in linked or not linked:
        return None
    alive = linked | {me}
    for member in members:
        if member.key != gone_host and member.key in alive and member.standby:
            return member
    return None


def rank(hosted_by: bytes | None) -> tuple[int, bytes]:
    """Where a rendezvous stands when a room is found on two: lower stays."""
    return (0, b"") if hosted_by is None else (1, hosted_by)


def stays(first: bytes | None, second: bytes | None) -> bytes | None:
    """Of two rendezvous holding the same room (each named by `hosted_by`), the one that stays."""
    return first if rank(first) <= rank(second) else second


@dataclass(frozen=True, slots=True)
class Sighting:
    """Our room, seen on the rendezvous at `url`, whose program it is (`hosted_by`)."""

    url: str
    hosted_by: bytes | None


def move_to(here: bytes | None, *, joined: bool, me: bytes, seen: Iterable[Sighting]) -> Sighting | None:
    """Where to go, or None to stay. HERE names the rendezvous we are (or were last) in; JOINED
    says whether we are in the room there now. Our own rendezvous is never somewhere to go."""
    found = [sighting for sighting in seen if sighting.hosted_by != me]
    if not found:
        return None
    best = min(found, key=lambda sighting: (rank(sighting.hosted_by), sighting.url))
    if not joined or rank(best.hosted_by) < rank(here):
        return best
    return None


def parse_room_info(body: object, *, url: str, room: str, game: str) -> Sighting | None:
    """`GET /api/rooms/{room}` at URL as a sighting of our room, or None when the answer is not
    our room (another game's room of the same name) or is malformed."""
    if not isinstance(body, dict) or body.get("room") != room or body.get("game") != game:
        return None
    players, hosted_by = body.get("players"), body.get("hosted_by")
    if not isinstance(players, int) or isinstance(players, bool) or players < 1:
        return None
    if hosted_by is not None and not wire.is_key(hosted_by):
        return None
    return Sighting(url, None if hosted_by is None else bytes.fromhex(hosted_by))
