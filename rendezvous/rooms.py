"""Room rules of the rendezvous: who is in which room, who hosts, who may join, kick and talk.

This module owns the lobby state and nothing else. It is pure: no asyncio, aiohttp, sockets,
clock or randomness; it must not import any of them. Every operation either raises `RoomError`
(a refusal the client is told about, state unchanged) or changes the state and returns the
`Deliver`s to hand to connections, with message bodies as JSON-ready dicts (see PROTOCOL.md).

Passwords reach this module only as results: the adapter hashes or verifies off the event loop
and passes a `PasswordCheck`, so the expensive part never runs inside these rules.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from rendezvous import names
from rendezvous.fairness import network_of
from rendezvous.reservations import MAX_KEYS, Reservation, Reservations

JsonObject = dict[str, object]

MAX_PAST = 64  # departed members a room remembers (wire.MAX_PAST_MEMBERS is what a client takes)
UNKNOWN_TENURE = 60.0  # seconds a past member counts as having stayed when nobody timed it
# An emptied room is reserved for its past members only if somebody really used it: two keys were
# in it, or one stayed this long. Issue 29 round three: a key that opened a room and left it 10 ms
# later made a reservation, so 72 addresses filled all 4,096 in 9.3 s (pushing out an honest
# room's), and each name probed with a join became one for the prober.
REAL_USE = 5.0


class RoomError(Exception):
    """A refused request: `code` is the protocol error code, `message` one sentence, and
    `retry_after` the seconds after which trying again may succeed, when the server knows."""

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Deliver:
    """One message for one connection, identified by its player key."""

    to: str
    message: JsonObject


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    """What the adapter found out about a password before calling `Lobby.join`.

    `checked_hash` is the stored hash the given password was verified against (None if none was),
    `matches` the result; `new_hash` is the hash of the given password for a room about to be made.
    """

    checked_hash: bytes | None = None
    matches: bool = False
    new_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class LobbyLimits:
    max_rooms: int = 1000
    room_capacity: int = 8
    rooms_per_source: int = 8  # rooms one source address created that still exist
    rooms_per_network: int = 32  # ... and all addresses of its network (fairness.network_of)

    def __post_init__(self) -> None:
        if self.max_rooms < 1 or self.rooms_per_source < 1 or self.rooms_per_network < 1:
            raise ValueError("max_rooms, rooms_per_source and rooms_per_network must be at least 1")
        if self.room_capacity < 2:
            raise ValueError("room_capacity must be at least 2")


@dataclass(slots=True)
class RoomMember:
    key: str
    name: str
    ready: bool = False
    standby: str | None = None  # where this member would host if it took over
    joined_at: float = 0.0  # the adapter's clock, seconds
    earlier: float = 0.0  # seconds it was a member of this room before this stay

    def to_json(self) -> JsonObject:
        member: JsonObject = {"key": self.key, "name": self.name, "ready": self.ready}
        if self.standby is not None:
            member["standby"] = self.standby
        return member


@dataclass(slots=True)
class Room:
    """Members are kept in join order: the first one is the host."""

    name: str
    game: str
    capacity: int
    password_hash: bytes | None
    quick: bool
    serial: int  # creation order, for deterministic quick-match choice
    source: str = ""  # the address that created it (its share of rooms counts it)
    members: list[RoomMember] = field(default_factory=list)
    banned: dict[str, None] = field(default_factory=dict)  # keys kicked out, most recent last
    past: list[str] = field(default_factory=list)
    """Keys of members who left, most recent last (at most MAX_PAST): a joiner accepts the
    signed writes they made while members (peer.core.sync.replica)."""
    tenure: dict[str, float] = field(default_factory=dict)
    """Of the past members, how long each was a member (seconds, all stays together)."""

    @property
    def host(self) -> str:
        return self.members[0].key

    @property
    def full(self) -> bool:
        return len(self.members) >= self.capacity

    def member(self, key: str) -> RoomMember | None:
        return next((m for m in self.members if m.key == key), None)

    def remember(self, key: str, tenure: float = 0.0) -> None:
        """KEY left after being a member for TENURE seconds: keep it among the past members.

        Past MAX_PAST, the one that stayed the shortest goes (the earliest to leave among
        equals), not simply the earliest (issue 30, F5): 64 throw-away keys that joined and
        left within 0.2 s pushed a real player off the list, and a joiner then refused that
        player's writes. Now they push out only each other, or members that stayed even less;
        to push out a player who stayed T seconds, 64 keys must each stay longer than T, and a
        room holds at most `capacity` members at a time."""
        if key in self.past:
            self.past.remove(key)
        self.past.append(key)
        self.tenure[key] = tenure
        while len(self.past) > MAX_PAST:
            shortest = min(self.past, key=lambda k: self.tenure.get(k, UNKNOWN_TENURE))
            self.past.remove(shortest)
            self.tenure.pop(shortest, None)

    def come_back(self, member: RoomMember) -> None:
        """A past member joins again: a member, not a past one, and its time here adds up."""
        if member.key in self.past:
            self.past.remove(member.key)
            member.earlier = self.tenure.pop(member.key, 0.0)

    def member_keys(self) -> list[str]:
        return [m.key for m in self.members]


@dataclass(frozen=True, slots=True)
class RoomSummary:
    """What the public status page may show about a room: no keys, no secrets."""

    name: str
    game: str
    players: int
    capacity: int
    password: bool
    quick: bool


@dataclass(frozen=True, slots=True)
class JoinPlan:
    """What `Lobby.plan_join` found: which stored hash to verify, or whether to hash a new one."""

    room: str | None
    verify_against: bytes | None
    hash_new_password: bool


class Lobby:
    """All rooms of one server. Keys identify members; names are only for display."""

    def __init__(self, limits: LobbyLimits | None = None, reservations: Reservations | None = None) -> None:
        self.limits = limits or LobbyLimits()
        self.reservations = reservations if reservations is not None else Reservations()
        self._rooms: dict[str, Room] = {}
        self._room_of: dict[str, str] = {}
        self._rooms_by_source: dict[str, int] = {}  # by address and by network (CIDR)
        self._serial = 0
        # The server is stopping (SIGTERM): every room emptied from now on is reserved, used or
        # not, as `reservations_at_stop` keeps the rooms still open: their members will rejoin.
        self.stopping = False

    # --- queries -------------------------------------------------------------------------

    def room_of(self, key: str) -> Room | None:
        name = self._room_of.get(key)
        return self._rooms[name] if name is not None else None

    def room(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def room_names(self) -> Collection[str]:
        return self._rooms.keys()

    @property
    def room_count(self) -> int:
        return len(self._rooms)

    def was_member(self, name: str, key: str) -> bool:
        """Whether KEY was a member of room NAME: one of the open room's past members, or a key
        its reservation admits (it proved the password before; rendezvous.access spares it)."""
        room = self._rooms.get(name)
        if room is not None:
            return key in room.past
        reserved = self.reservations.get(name)
        return reserved is not None and reserved.admits(key)

    def summaries(self) -> list[RoomSummary]:
        return [
            RoomSummary(r.name, r.game, len(r.members), r.capacity, r.password_hash is not None, r.quick)
            for r in sorted(self._rooms.values(), key=lambda r: r.serial)
        ]

    # --- joining -------------------------------------------------------------------------

    def plan_join(self, key: str, game: str, room: str | None, password: str | None) -> JoinPlan:
        """Say what password work `join` will need, refusing early what cannot succeed."""
        self._check_not_in_room(key)
        if room is None:
            if password is not None:
                raise RoomError("bad_message", "Quick match rooms have no password; send null.")
            return JoinPlan(None, None, False)
        existing = self._rooms.get(room)
        reserved = self.reservations.get(room) if existing is None else None
        if reserved is not None:
            return self._plan_reopen(reserved, key, game, password)
        if existing is None:
            return JoinPlan(room, None, password is not None)
        self._check_can_enter(existing, key, game)
        if existing.password_hash is None:
            return JoinPlan(room, None, False)
        if password is None:
            raise RoomError("password_required", f"Room {room!r} needs a password.")
        return JoinPlan(room, existing.password_hash, False)

    def join(
        self,
        key: str,
        name: str,
        game: str,
        room: str | None,
        capacity: int | None,
        check: PasswordCheck | None = None,
        standby: str | None = None,
        source: str = "",
        *,
        now: float = 0.0,
    ) -> list[Deliver]:
        """Put `key` into a room (quick match when `room` is None); `check` is the password work;
        `source` is the joiner's address, charged with the room if this join creates it; `now`
        (the adapter's clock, seconds) times its stay (see `Room.remember`)."""
        self._check_not_in_room(key)
        check = check or PasswordCheck()
        target = self._quick_room(game, capacity, name) if room is None else self._rooms.get(room)
        _check_name(name, None)
        reserved = self.reservations.get(room) if room is not None and target is None else None
        if reserved is not None:
            target = self._reopen(reserved, key, game, check, source)
        elif target is None:
            target = self._create(game, room, capacity, check, source)
        else:
            self._check_can_enter(target, key, game)
            self._check_password(target, check)
            _check_name(name, target)  # (after the password: no names to those who lack it)
        return self._add(target, RoomMember(key, name, standby=standby, joined_at=now))

    def _check_not_in_room(self, key: str) -> None:
        current = self.room_of(key)
        if current is not None:
            raise RoomError("already_in_room", f"You are already in room {current.name!r}; leave it first.")

    def _check_can_enter(self, room: Room, key: str, game: str) -> None:
        if room.game != game:
            raise RoomError("wrong_game", f"Room {room.name!r} is playing {room.game!r}, not {game!r}.")
        if key in room.banned:
            raise RoomError("banned", f"The host of room {room.name!r} has kicked you out of it.")
        if room.full:
            raise RoomError("room_full", f"Room {room.name!r} is full ({room.capacity} players).")

    def _check_password(self, room: Room, check: PasswordCheck) -> None:
        if room.password_hash is None:
            return
        if check.checked_hash is not room.password_hash:
            # The room was replaced while the adapter was verifying against the old hash.
            raise RoomError("try_again", f"Room {room.name!r} changed meanwhile; please join again.")
        if not check.matches:
            raise RoomError("wrong_password", f"Wrong password for room {room.name!r}.")

    def _capacity(self, capacity: int | None) -> int:
        limit = self.limits.room_capacity
        if capacity is None:
            return limit
        if not 2 <= capacity <= limit:
            raise RoomError("bad_message", f"Room capacity must be between 2 and {limit}.")
        return capacity

    def _quick_room(self, game: str, capacity: int | None, name: str) -> Room | None:
        wanted = None if capacity is None else self._capacity(capacity)
        candidates = [
            r
            for r in self._rooms.values()
            if r.quick
            and r.game == game
            and not r.full
            and wanted in (None, r.capacity)
            and not any(names.alike(name, m.name) for m in r.members)  # (a second Bob goes elsewhere)
        ]
        # Fullest first gets games started soonest; the oldest breaks ties deterministically.
        candidates.sort(key=lambda r: (-len(r.members), r.serial))
        return candidates[0] if candidates else None

    def _create(
        self, game: str, name: str | None, capacity: int | None, check: PasswordCheck, source: str
    ) -> Room:
        size = self._capacity(capacity)
        if self._rooms_by_source.get(source, 0) >= self.limits.rooms_per_source:
            share = self.limits.rooms_per_source
            raise RoomError("too_many_rooms", f"Your address already has {share} rooms open; join one.")
        network = network_of(source)
        if network != source and self._rooms_by_source.get(network, 0) >= self.limits.rooms_per_network:
            share = self.limits.rooms_per_network
            message = f"Your network ({network}) already has {share} rooms open; join one."
            raise RoomError("too_many_rooms", message)
        if len(self._rooms) >= self.limits.max_rooms:
            raise RoomError("too_many_rooms", "The server has as many rooms as it allows; try later.")
        if name is not None and check.checked_hash is not None:
            # A password was verified against a room that has vanished since: start over.
            raise RoomError("try_again", f"Room {name!r} changed meanwhile; please join again.")
        self._serial += 1
        quick = name is None
        room_name = self._quick_name() if name is None else name
        room = Room(room_name, game, size, None if quick else check.new_hash, quick, self._serial, source)
        self._rooms[room_name] = room
        for key in {source, network}:
            self._rooms_by_source[key] = self._rooms_by_source.get(key, 0) + 1
        return room

    def _quick_name(self) -> str:
        number = self._serial
        while f"quick-{number}" in self._rooms or f"quick-{number}" in self.reservations:
            number += 1
        return f"quick-{number}"

    def _add(self, room: Room, member: RoomMember) -> list[Deliver]:
        room.members.append(member)
        room.come_back(member)
        self._room_of[member.key] = room.name
        joined: JsonObject = {
            "type": "joined",
            "room": room.name,
            "game": room.game,
            "host": room.host,
            "capacity": room.capacity,
            "password": room.password_hash is not None,
            "quick": room.quick,
            "members": [m.to_json() for m in room.members],
            "past": list(room.past),
        }
        event = self._event(room, "member_joined", member)
        out = [Deliver(member.key, joined)]
        out += [Deliver(k, event) for k in room.member_keys() if k != member.key]
        return out + self._roster(room)

    # --- reserved names (rendezvous.reservations) ---------------------------------------------

    @staticmethod
    def _check_reopen(reserved: Reservation, key: str, game: str) -> None:
        """Only a past member may open a reserved room again; anyone else learns nothing more."""
        if key in reserved.banned:
            raise RoomError("banned", f"The host of room {reserved.name!r} has kicked you out of it.")
        if not reserved.admits(key):
            message = f"Room {reserved.name!r} is kept for its players for a while; pick another name."
            raise RoomError("room_reserved", message)
        if reserved.game != game:
            message = f"Room {reserved.name!r} is playing {reserved.game!r}, not {game!r}."
            raise RoomError("wrong_game", message)

    def _plan_reopen(self, reserved: Reservation, key: str, game: str, password: str | None) -> JoinPlan:
        self._check_reopen(reserved, key, game)
        if reserved.password_hash is None:
            return JoinPlan(reserved.name, None, False)
        if password is None:
            raise RoomError("password_required", f"Room {reserved.name!r} needs a password.")
        return JoinPlan(reserved.name, reserved.password_hash, False)

    def _reopen(self, reserved: Reservation, key: str, game: str, check: PasswordCheck, source: str) -> Room:
        """A past member opens its reserved room again: same game, capacity, password, bans."""
        self._check_reopen(reserved, key, game)
        if reserved.password_hash is not None:
            if check.checked_hash is not reserved.password_hash:
                raise RoomError("try_again", f"Room {reserved.name!r} changed meanwhile; please join again.")
            if not check.matches:
                raise RoomError("wrong_password", f"Wrong password for room {reserved.name!r}.")
        capacity = min(reserved.capacity, self.limits.room_capacity)
        opened = PasswordCheck(new_hash=reserved.password_hash)
        room = self._create(reserved.game, reserved.name, capacity, opened, source)
        room.quick, room.past = reserved.quick, list(reserved.past)
        room.banned = dict.fromkeys(reserved.banned)
        if reserved.past and reserved.tenure > 0:  # (each its share: the reservation keeps the sum)
            room.tenure = dict.fromkeys(reserved.past, reserved.tenure / len(reserved.past))
        self.reservations.release(reserved.name)
        return room

    def reservations_at_stop(self, *, now: float = 0.0) -> Reservations:
        """What to keep across a restart: the reserved names, and every room still open as if its
        members had just gone (the server is stopping: they will rejoin), even one a single key
        has just opened (it is in it: it will rejoin)."""
        kept = Reservations(self.reservations.limits)
        for name in self.reservations.names():
            reserved = self.reservations.get(name)
            if reserved is not None:
                kept.hold(reserved)
        for room in sorted(self._rooms.values(), key=lambda r: r.serial):
            emptied = Room(room.name, room.game, room.capacity, room.password_hash, room.quick, room.serial)
            emptied.source, emptied.banned, emptied.past = room.source, room.banned, list(room.past)
            emptied.tenure = dict(room.tenure)
            for member in room.members:
                emptied.remember(member.key, member.earlier + max(0.0, now - member.joined_at))
            kept.hold(_reservation_of(emptied))
        return kept

    # --- leaving, kicking, ready ---------------------------------------------------------

    def leave(self, key: str, *, now: float = 0.0) -> list[Deliver]:
        """`key` leaves its room by choice; it is told `left`."""
        room = self._require_room(key)
        return [
            Deliver(key, {"type": "left", "room": room.name}),
            *self._remove(room, key, "member_left", now),
        ]

    def disconnect(self, key: str, *, now: float = 0.0) -> list[Deliver]:
        """The connection of `key` is gone: leave its room, if any, telling only the others."""
        room = self.room_of(key)
        return [] if room is None else self._remove(room, key, "member_left", now)

    def kick(self, host: str, target: str, *, now: float = 0.0) -> list[Deliver]:
        room = self._require_room(host)
        if room.host != host:
            raise RoomError("not_host", "Only the room's host can kick.")
        if target == host or room.member(target) is None:
            raise RoomError("bad_target", "That key is not another member of your room.")
        room.banned.pop(target, None)
        room.banned[target] = None  # (most recent last: a reservation keeps the latest MAX_KEYS)
        kicked = Deliver(target, {"type": "kicked", "room": room.name, "by": host})
        return [kicked, *self._remove(room, target, "member_kicked", now, by=host)]

    def set_ready(self, key: str, ready: bool) -> list[Deliver]:
        room = self._require_room(key)
        member = room.member(key)
        if member is None:  # pragma: no cover - _room_of and members are kept together
            raise RoomError("not_in_room", "You are not in a room.")
        member.ready = ready
        event = self._event(room, "member_ready", member, ready=ready)
        return [Deliver(k, event) for k in room.member_keys()] + self._roster(room)

    def _require_room(self, key: str) -> Room:
        room = self.room_of(key)
        if room is None:
            raise RoomError("not_in_room", "You are not in a room; join one first.")
        return room

    def _remove(self, room: Room, key: str, event_type: str, now: float, **extra: object) -> list[Deliver]:
        member = room.member(key)
        if member is None:  # pragma: no cover - _room_of and members are kept together
            return []
        room.members.remove(member)
        del self._room_of[key]
        room.remember(key, member.earlier + max(0.0, now - member.joined_at))
        if not room.members:
            del self._rooms[room.name]
            if self.stopping or _really_used(room):
                self.reservations.hold(_reservation_of(room))
            for counted in {room.source, network_of(room.source)}:
                left = self._rooms_by_source.pop(counted, 1) - 1
                if left:
                    self._rooms_by_source[counted] = left
            return []
        event = self._event(room, event_type, member, **extra)
        return [Deliver(k, event) for k in room.member_keys()] + self._roster(room)

    # --- talking -------------------------------------------------------------------------

    def relay(self, sender: str, to: str, data: JsonObject) -> list[Deliver]:
        """A signalling message, forwarded only to another member of the sender's room."""
        room = self._require_room(sender)
        if to == sender or room.member(to) is None:
            raise RoomError("bad_target", "Signals go only to another member of your room.")
        return [Deliver(to, {"type": "signal", "from": sender, "room": room.name, "data": data})]

    def chat(self, sender: str, text: str) -> list[Deliver]:
        room = self._require_room(sender)
        member = room.member(sender)
        name = member.name if member else ""
        message: JsonObject = {
            "type": "chat",
            "room": room.name,
            "from": sender,
            "name": name,
            "text": text,
        }
        return [Deliver(k, message) for k in room.member_keys()]

    def roster(self, name: str) -> list[Deliver]:
        """The roster of room `name` as it is now, for each member (none if the room is gone)."""
        room = self._rooms.get(name)
        return [] if room is None else self._roster(room)

    # --- helpers -------------------------------------------------------------------------

    @staticmethod
    def _event(room: Room, event_type: str, member: RoomMember, **extra: object) -> JsonObject:
        return {
            "type": event_type,
            "room": room.name,
            "key": member.key,
            "name": member.name,
            **extra,
        }

    @staticmethod
    def _roster(room: Room) -> list[Deliver]:
        roster: JsonObject = {
            "type": "roster",
            "room": room.name,
            "host": room.host,
            "members": [m.to_json() for m in room.members],
            "past": list(room.past),
        }
        return [Deliver(k, roster) for k in room.member_keys()]


def _check_name(name: str, room: Room | None) -> None:
    """Names are never msxsync's own words and unique in ROOM, after folding look-alikes
    (`rendezvous.names`): a player reads names, not keys."""
    refusal = names.refusal(name, [m.name for m in room.members] if room is not None else [])
    if refusal is not None:
        raise RoomError(*refusal)


def _really_used(room: Room) -> bool:
    """Whether an emptied room is worth reserving: two keys were in it (one may have been kicked),
    or one stayed `REAL_USE` seconds. A name opened and left at once is nobody's to keep."""
    return len(room.past) >= 2 or any(room.tenure.get(k, 0.0) >= REAL_USE for k in room.past)


def _reservation_of(room: Room) -> Reservation:
    """What an emptied room leaves behind for its past members (rendezvous.reservations), weighed
    by how long they stayed; of the bans, the most recent `MAX_KEYS`."""
    banned = tuple(list(room.banned)[-MAX_KEYS:])
    past = tuple(key for key in room.past if key not in room.banned)
    tenure = sum(room.tenure.get(key, 0.0) for key in past)
    kept = (room.capacity, room.password_hash, room.quick, room.source, past, banned, tenure)
    return Reservation(room.name, room.game, *kept)


def recipients(deliveries: Iterable[Deliver]) -> set[str]:
    """Every key that gets at least one message (handy for adapters and tests)."""
    return {d.to for d in deliveries}
