"""Reserved room names: an emptied room is kept for its past members a while (issue 29, F4).

When the last member of a room goes (a blip that drops everyone, a server restart), the room's
name, game, capacity, password hash, bans and past members are kept here for `ReservationLimits.
hold` seconds, much longer than a client's rejoin window (peer.mesh.signalling retries every few
seconds). Meanwhile only a past member's key may open the room again, with the same password check
as before; anyone else is refused `room_reserved`, so a stranger who knows the name cannot take it
and make the members' rejoins fail with `wrong_password`.

Memory is bounded: at most `max_total` reservations, at most `per_source` from rooms one address
created and `per_network` from rooms its network created (`fairness.network_of`: an IPv4 /24, an
IPv6 /64), the oldest of that address or network going first, so whoever opens and empties rooms
in a loop pushes out only its own. Beyond `max_total` a reservation of the network holding the
most goes, the one whose players stayed the shortest (the new one itself, if it is that one),
never simply the oldest: issue 29 round three, 72 addresses over three /24s filled all 4,096 in
9.3 s and pushed an honest room's reservation out, and a stranger then took its name. (The lobby
reserves only rooms somebody really used: `rooms.Lobby`.)

The same reservations survive a restart as a JSON file (`dump` / `load`, written by the adapter
in `rendezvous.persist`): everything in it is checked as hostile input before it is believed.

Pure: no asyncio, aiohttp, sockets, clock or files; time comes in as `now` (monotonic seconds).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from games.definition import is_valid_game_name
from rendezvous import wire
from rendezvous.fairness import network_of

JsonObject = dict[str, object]
FORMAT = 1  # of the dump; a file of another format is refused
MAX_HASH = 256  # an argon2id string is about 100 characters
MAX_KEYS = 256  # past members or bans kept for one room (the lobby keeps 64 past members and
# the 256 most recent bans: a kicked key stays out however many were kicked after it)
MAX_SOURCE = 64  # characters of a source address (an IPv6 address is at most 45)
MAX_CAPACITY = 64
PER_SOURCE = 64  # reservations from the rooms one address created
SCAN_NETWORKS, SCAN_EACH = 64, 16  # what making room looks at, at most (`Reservations._make_room`)


@dataclass(frozen=True, slots=True)
class ReservationLimits:
    """`hold`: seconds an emptied room's name stays reserved; `max_total` reservations in all,
    `per_source` from the rooms one address created, `per_network` from its network's."""

    hold: float = 300.0
    max_total: int = 4096
    per_source: int = PER_SOURCE
    per_network: int = 4 * PER_SOURCE  # (fairness.SourceLimits.network_share times per_source)

    def __post_init__(self) -> None:
        if not self.hold >= 0:
            raise ValueError("the reservation hold must not be negative")
        if self.max_total < 1 or self.per_source < 1 or self.per_network < 1:
            raise ValueError("max_total, per_source and per_network must be at least 1")


@dataclass(frozen=True, slots=True)
class Reservation:
    """What an emptied room leaves behind; `until` is None until the next `expire(now)` stamps it
    (so a reservation made between two clock readings is held at least `hold` from the later)."""

    name: str
    game: str
    capacity: int
    password_hash: bytes | None
    quick: bool
    source: str
    past: tuple[str, ...]  # keys of past members, most recent last
    banned: tuple[str, ...]  # keys the host kicked out, most recent last
    tenure: float = 0.0  # seconds its past members were members, all together (its weight)
    until: float | None = None

    def admits(self, key: str) -> bool:
        """Whether KEY may open the room again: a past member the host did not kick out."""
        return key in self.past and key not in self.banned


class Reservations:
    """The reserved names of one lobby, oldest first (see the module docstring)."""

    def __init__(self, limits: ReservationLimits | None = None) -> None:
        self.limits = limits or ReservationLimits()
        self._held: OrderedDict[str, Reservation] = OrderedDict()
        self._by_source: dict[str, OrderedDict[str, None]] = {}  # names, oldest first
        self._by_network: dict[str, OrderedDict[str, None]] = {}  # names, oldest first
        self._networks_at: dict[int, OrderedDict[str, None]] = {}  # networks by how many they hold
        self._unstamped: list[str] = []  # held since the last `expire` (at the end of `_held`)
        self.dropped = 0  # pushed out by the bounds before they expired (a metric)

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, name: object) -> bool:
        return name in self._held

    def get(self, name: str) -> Reservation | None:
        return self._held.get(name)

    def names(self) -> list[str]:
        return list(self._held)

    def hold(self, reservation: Reservation) -> None:
        """Reserve a name (replacing an older reservation of it), within the bounds."""
        if not reservation.past or self.limits.hold == 0:
            return  # nobody to keep it for
        self.release(reservation.name)
        network = network_of(reservation.source)
        if len(self._held) >= self.limits.max_total and not self._make_room(reservation, network):
            self.dropped += 1  # the weakest of the network holding the most was this one
            return
        self._held[reservation.name] = reservation
        if reservation.until is None:
            self._unstamped.append(reservation.name)
        same_source = _index(self._by_source, reservation.source, reservation.name)
        same_network = _index(self._by_network, network, reservation.name)
        self._recount(network, len(same_network) - 1)
        while len(same_source) > self.limits.per_source:
            self._push_out(next(iter(same_source)))
        while len(same_network) > self.limits.per_network:
            self._push_out(next(iter(same_network)))

    def _make_room(self, new: Reservation, network: str) -> bool:
        """Push out one reservation to make room for NEW (of NETWORK), or say NEW is the one to
        go: the candidates are those of the networks holding the most (NEW counted in its own),
        and of them the one whose players stayed the shortest. Bounded work: at most
        `SCAN_NETWORKS` of those networks (the longest at that count first) and the oldest
        `SCAN_EACH` of each are looked at (a flood of 4,096 networks of one each took 1 ms a
        reservation when all were)."""
        own = len(self._by_network.get(network, ())) + 1
        most = max(own, max(self._networks_at, default=0))
        crowded = list(itertools.islice(self._networks_at.get(most, ()), SCAN_NETWORKS))
        if own == most:
            crowded.append(network)
        weakest: tuple[float, str | None] | None = None  # (tenure, name; None for NEW)
        for candidate in crowded:
            for name in itertools.islice(self._by_network.get(candidate, ()), SCAN_EACH):
                tenure = self._held[name].tenure
                if weakest is None or tenure < weakest[0]:
                    weakest = (tenure, name)
            if candidate == network and (weakest is None or new.tenure < weakest[0]):
                weakest = (new.tenure, None)
        if weakest is None or weakest[1] is None:
            return False
        self._push_out(weakest[1])
        return True

    def _recount(self, network: str, before: int) -> None:
        """NETWORK held BEFORE reservations and now holds what `_by_network` says: move it
        between the sets of `_networks_at`."""
        after = len(self._by_network.get(network, ()))
        if before:
            was = self._networks_at[before]
            del was[network]
            if not was:
                del self._networks_at[before]
        if after:
            self._networks_at.setdefault(after, OrderedDict())[network] = None

    def _push_out(self, name: str) -> None:
        self.release(name)
        self.dropped += 1

    def release(self, name: str) -> Reservation | None:
        """The room is open again (or the name is free): stop holding it."""
        reservation = self._held.pop(name, None)
        if reservation is not None:
            _unindex(self._by_source, reservation.source, name)
            network = network_of(reservation.source)
            before = len(self._by_network[network])
            _unindex(self._by_network, network, name)
            self._recount(network, before)
        return reservation

    def expire(self, now: float) -> int:
        """Stamp reservations made since the last call, drop those whose time is up; how many.
        Cheap (it runs on every join and leave): `_held` is in the order of `until`, since every
        hold lasts the same and a loaded file is held soonest-ending first, so only the oldest
        are looked at."""
        for name in self._unstamped:
            reservation = self._held.get(name)
            if reservation is not None and reservation.until is None:  # (order kept: same key)
                self._held[name] = _replace_until(reservation, now + self.limits.hold)
        self._unstamped.clear()
        gone = 0
        while self._held:
            oldest = next(iter(self._held.values()))
            if oldest.until is None or oldest.until > now:
                break
            self.release(oldest.name)
            gone += 1
        return gone

    # ---- across a restart ----------------------------------------------------------------------

    def dump(self, now: float) -> JsonObject:
        """Everything held, as JSON: time left in seconds (the clock does not survive a restart)."""
        items = []
        for r in self._held.values():
            until = now + self.limits.hold if r.until is None else r.until
            items.append(
                {
                    "room": r.name,
                    "game": r.game,
                    "capacity": r.capacity,
                    "password_hash": None if r.password_hash is None else r.password_hash.decode("ascii"),
                    "quick": r.quick,
                    "source": r.source,
                    "past": list(r.past),
                    "banned": list(r.banned),
                    "tenure": r.tenure,
                    "remaining": max(0.0, until - now),
                }
            )
        return {"format": FORMAT, "reservations": items}

    def load(self, data: object, now: float, elapsed: float = 0.0) -> int:
        """Hold what a `dump` said, ELAPSED seconds after it was written; ValueError (and nothing
        held) if anything in it is malformed. Time left is never more than `hold`. How many."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a reservations file of format {FORMAT}")
        items = data.get("reservations")
        if not isinstance(items, list) or len(items) > self.limits.max_total:
            raise ValueError(f"'reservations' is not a list of at most {self.limits.max_total}")
        parsed = [parse_reservation(item, index) for index, item in enumerate(items)]
        held = 0
        for reservation, remaining in sorted(parsed, key=lambda item: item[1]):  # (see `expire`)
            left = min(remaining, self.limits.hold) - max(0.0, elapsed)
            if left > 0:
                self.hold(_replace_until(reservation, now + left))
                held += 1
        return held


def _index(table: dict[str, OrderedDict[str, None]], key: str, name: str) -> OrderedDict[str, None]:
    names = table.setdefault(key, OrderedDict())
    names[name] = None
    return names


def _unindex(table: dict[str, OrderedDict[str, None]], key: str, name: str) -> None:
    names = table[key]
    del names[name]
    if not names:
        del table[key]


def _replace_until(r: Reservation, until: float) -> Reservation:
    return dataclasses.replace(r, until=until)


def parse_reservation(item: object, index: int = 0) -> tuple[Reservation, float]:
    """One entry of a dump, checked field by field; ValueError naming what is wrong."""

    def bad(what: str) -> ValueError:
        return ValueError(f"reservation {index}: {what}")

    if not isinstance(item, dict):
        raise bad("not an object")
    name, game, capacity = item.get("room"), item.get("game"), item.get("capacity")
    if not wire.is_valid_room_name(name):
        raise bad("'room' is not a room name")
    if not isinstance(game, str) or not is_valid_game_name(game):
        raise bad("'game' is not a game name")
    if not isinstance(capacity, int) or isinstance(capacity, bool) or not 2 <= capacity <= MAX_CAPACITY:
        raise bad(f"'capacity' is not a number from 2 to {MAX_CAPACITY}")
    quick, source, remaining = item.get("quick"), item.get("source"), item.get("remaining")
    if not isinstance(quick, bool):
        raise bad("'quick' is not true or false")
    if not isinstance(source, str) or len(source) > MAX_SOURCE or not source.isprintable():
        raise bad("'source' is not an address")
    if not isinstance(remaining, int | float) or isinstance(remaining, bool) or not 0 <= remaining < 1e9:
        raise bad("'remaining' is not a number of seconds")
    tenure = item.get("tenure", 0.0)  # (absent from the files of earlier versions)
    if not isinstance(tenure, int | float) or isinstance(tenure, bool) or not 0 <= tenure < 1e12:
        raise bad("'tenure' is not a number of seconds")
    return (
        Reservation(
            name,
            game,
            capacity,
            _password_hash(item.get("password_hash"), bad),
            quick,
            source,
            tuple(_keys(item.get("past"), "past", bad)),
            tuple(_keys(item.get("banned"), "banned", bad)),
            float(tenure),
        ),
        float(remaining),
    )


def _password_hash(value: object, bad: Callable[[str], ValueError]) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("$argon2id$") or len(value) > MAX_HASH:
        raise bad("'password_hash' is not an argon2id hash")
    if not value.isascii() or not value.isprintable():
        raise bad("'password_hash' is not an argon2id hash")
    return value.encode("ascii")


def _keys(value: object, field: str, bad: Callable[[str], ValueError]) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_KEYS or not all(wire.is_key(k) for k in value):
        raise bad(f"'{field}' is not a list of at most {MAX_KEYS} keys")
    if len(set(value)) != len(value):
        raise bad(f"'{field}' repeats a key")
    return list(value)
