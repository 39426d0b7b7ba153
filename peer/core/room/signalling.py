"""The signalling client's protocol object: the rendezvous WebSocket seen from a player, sans I/O.

Owns what the client says and how it judges what the rendezvous says (PROTOCOL.md, version 4):
the challenge and signed hello, the ICE servers (the welcome's STUN; STUN and TURN in `joined` and
in each `ice_servers` renewal while a member), the welcome's relay limits, the join, the roster
with its rejoin grace, the `signal` relay, and the binary relay frames of mesh messages. It does
no I/O (no asyncio, aiohttp, sockets or clock: `now` comes in as an argument, from a monotonic
clock), like the server's `rendezvous.protocol` and aioquic's connection:

    connection_made(now)            a socket is open
    receive_text(text, now)         -> events      one text frame
    receive_binary(data)            -> events      one binary frame (a relayed mesh frame)
    handle_timer(now)               -> events      when now >= get_timer()
    connection_lost()               the socket is gone, whoever closed it
    send_signal(to, data)           queue a relay to another member
    send_relay(to, frame)           queue a relayed mesh frame (binary)
    data_to_send()                  -> list[str | bytes]   the frames to write, in order

Threat model: the rendezvous is not trusted with the game, but it could be malicious or broken.
Nothing it sends may end the session: every frame that is not valid JSON (deep nesting included),
not an object, of the wrong shape for its type, or out of order becomes a `BadMessage` event (log,
count, carry on) or, during the handshake, a `Disconnect` (close and try again after a backoff).
Only the refusals listed in PROTOCOL.md (wrong password, room full, version mismatch, kicked…)
end the client, as `Refused`; a rendezvous that wants to refuse service can do that anyway.
A refusal of a **re**join (we were in the room before this connection) is different: someone may
have taken the room's name, or our own name, while we were away (issue 29, F4; issue 30, F8: a
member who waits for a player's connection to blip must not end that player's program), and the
mesh's own password MAC already tells real members apart, so it is a `RejoinRefused` notice (told
once) and a `Disconnect` that tries again after REJOIN_RETRY, while the mesh plays on with the
peers it has.

Constants shared with the server come from `rendezvous.wire`. Must not import asyncio or aiohttp.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

from nacl.signing import SigningKey

from rendezvous import wire

HANDSHAKE_TIMEOUT = 10.0  # for each of challenge and welcome
JOIN_TIMEOUT = 60.0  # the server may be hashing a room password behind a short queue
REJOIN_GRACE = 10.0
REJOIN_RETRY = 15.0  # a refused rejoin is tried again this long after (a password check each time)
OUTBOX_SIZE = 256  # signals queued and not yet written; beyond that they are dropped
RELAY_OUTBOX_BYTES = 512 * 1024  # relayed frames queued and not yet written; beyond, dropped
MAX_MEMBERS = 256  # a roster longer than this is not a room, it is an attack on the mesh
# The most players a room may hold as far as this peer is concerned: every member is a WebRTC link
# (sockets, a DTLS session, an SCTP association); a rendezvous (in LAN play, any player) that
# claims more, or lists more members than the capacity it announced, is lying (issue 18).
MAX_CAPACITY = 32
EXCERPT = 80  # characters of a bad frame kept for the log

# Before we are in the room: errors worth retrying (the server was busy) and final refusals.
RETRY_JOIN = frozenset({"busy", "try_again", "try_later", "too_many_rooms", "rate_limited"})
JOIN_REFUSALS = frozenset(
    {
        "unknown_game",
        "wrong_game",
        "room_full",
        "password_required",
        "wrong_password",
        "room_reserved",
        "banned",
        "bad_message",
        "name_taken",
        "name_reserved",
    }
)
# ... of which these end the client even on a rejoin: the host kicked us, or we spoke wrongly.
REJOIN_FINAL = frozenset({"banned", "bad_message"})
FATAL_CODES = frozenset({"version_mismatch", "bad_signature", "replaced"})


# ---- what a roster is --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    key: bytes
    name: str
    ready: bool
    standby: str | None = None  # where this member would host if it took over (LAN play)


@dataclass(frozen=True, slots=True)
class Roster:
    room: str
    host: bytes
    members: tuple[Member, ...]
    past: tuple[bytes, ...] = ()
    """Members who left (their signed writes from while they were members stay valid)."""

    @property
    def keys(self) -> list[bytes]:
        return [member.key for member in self.members]


def parse_key(text: object) -> bytes | None:
    """A public key as sent on the wire (64 lower-case hex digits, nothing else), or None."""
    return bytes.fromhex(text) if wire.is_key(text) else None


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN or TURN server as the welcome names it (an RTCIceServer's fields)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.urls) <= wire.MAX_ICE_URLS:
            raise ValueError(f"an ICE server has 1 to {wire.MAX_ICE_URLS} URLs")
        for url in self.urls:
            if not (wire.is_stun_url(url) or wire.is_turn_url(url)):
                raise ValueError(f"not a stun:/turn:/turns: URL: {url[:60]!r}")
        turn = any(wire.is_turn_url(url) for url in self.urls)
        if turn and (self.username is None or self.credential is None):
            raise ValueError("a TURN server needs a username and a credential")
        for text in (self.username, self.credential):
            if text is not None and not (0 < len(text) <= wire.MAX_ICE_TEXT and text.isprintable()):
                raise ValueError(
                    f"TURN username and credential are 1 to {wire.MAX_ICE_TEXT} printable characters"
                )


def parse_ice_servers(value: object) -> tuple[tuple[IceServer, ...], list[str]]:
    """The welcome's `ice_servers`: the valid servers, and a reason for each one skipped."""
    if value is None:
        return (), []
    if not isinstance(value, list):
        return (), ["'ice_servers' is not a list"]
    servers, problems = [], []
    for item in value[: wire.MAX_ICE_SERVERS]:
        try:
            if not isinstance(item, dict):
                raise ValueError("not an object")
            urls, username, credential = item.get("urls"), item.get("username"), item.get("credential")
            if isinstance(urls, str):
                urls = [urls]
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise ValueError("'urls' is not a list of strings")
            if not isinstance(username, str | None) or not isinstance(credential, str | None):
                raise ValueError("'username' and 'credential' are strings")
            servers.append(IceServer(tuple(urls), username, credential))
        except ValueError as exc:
            problems.append(f"an ICE server was skipped: {exc}")
    if len(value) > wire.MAX_ICE_SERVERS:
        problems.append(f"only the first {wire.MAX_ICE_SERVERS} ICE servers are used")
    return tuple(servers), problems


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """The welcome's `relay` (version 3): the server relays mesh frames within these rates."""

    client_rate: float  # bytes a second one connection may have relayed ...
    client_burst: int
    room_rate: float  # ... and one room, all its members together
    room_burst: int


def parse_relay_limits(value: object) -> RelayLimits | None:
    """The welcome's `relay`; None (no relay) for null, absent or anything malformed."""
    if not isinstance(value, dict):
        return None
    numbers = [value.get(name) for name in ("client_rate", "client_burst", "room_rate", "room_burst")]
    if not all(isinstance(n, int | float) and not isinstance(n, bool) and n > 0 for n in numbers):
        return None
    client_rate, client_burst, room_rate, room_burst = numbers
    return RelayLimits(float(client_rate), int(client_burst), float(room_rate), int(room_burst))  # type: ignore[arg-type]


def parse_member(item: object) -> Member | None:
    if not isinstance(item, dict):
        return None
    key, name, standby = parse_key(item.get("key")), item.get("name"), item.get("standby")
    if key is None or not wire.is_roster_name(name):
        return None
    return Member(key, name, item.get("ready") is True, standby if wire.is_standby_url(standby) else None)


def parse_roster(message: dict[str, Any]) -> Roster | None:
    """A `joined` or `roster` message as a Roster, or None if anything in it is malformed."""
    room, host, items = message.get("room"), parse_key(message.get("host")), message.get("members")
    if not wire.is_valid_room_name(room) or host is None:
        return None
    if not isinstance(items, list) or len(items) > MAX_MEMBERS:
        return None
    members = [parse_member(item) for item in items]
    valid = [m for m in members if m is not None]
    if len(valid) != len(members) or len({m.key for m in valid}) != len(valid):
        return None  # a bad or repeated member
    past = message.get("past", [])  # (absent from older rendezvous)
    if not isinstance(past, list) or len(past) > MAX_MEMBERS:
        return None
    past_keys = [parse_key(item) for item in past]
    if any(key is None for key in past_keys):
        return None
    return Roster(room, host, tuple(valid), tuple(k for k in past_keys if k is not None))


# ---- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignallingEvent:
    """Base of everything the protocol object asks its adapter to act on."""


@dataclass(frozen=True, slots=True)
class Welcomed(SignallingEvent):
    """The hello was accepted; the join is queued. `ice_servers`: the rendezvous's STUN and TURN;
    `hosted_by`: the player whose program the rendezvous is, None for a standalone server."""

    ice_servers: tuple[IceServer, ...] = ()
    hosted_by: bytes | None = None


@dataclass(frozen=True, slots=True)
class IceServersChanged(SignallingEvent):
    """New STUN and TURN servers for new links: a member's renewed TURN credentials (version 4)."""

    ice_servers: tuple[IceServer, ...]


@dataclass(frozen=True, slots=True)
class RosterChanged(SignallingEvent):
    """The room as we now see it (the first one of a connection means: joined)."""

    roster: Roster


@dataclass(frozen=True, slots=True)
class SignalReceived(SignallingEvent):
    sender: bytes
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RelayReceived(SignallingEvent):
    """A mesh frame another member sent through the rendezvous's relay (opaque here)."""

    sender: bytes
    frame: bytes


@dataclass(frozen=True, slots=True)
class BadMessage(SignallingEvent):
    """The rendezvous sent something malformed or out of place; it was skipped."""

    reason: str
    excerpt: str


@dataclass(frozen=True, slots=True)
class Notice(SignallingEvent):
    """A non-fatal error the rendezvous reported (worth a log line)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Disconnect(SignallingEvent):
    """This connection is over: close it, then connect again after the backoff (and at least
    `retry_after` seconds)."""

    reason: str
    retry_after: float = 0.0


@dataclass(frozen=True, slots=True)
class RejoinRefused(SignallingEvent):
    """The rendezvous refused to let us back into the room we were in (tell the player; the mesh
    plays on with the peers it has, and the join is tried again after REJOIN_RETRY)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Refused(SignallingEvent):
    """A refusal that retrying will not fix: the client ends."""

    code: str
    message: str


# ---- states ------------------------------------------------------------------------------------


class Phase(Enum):
    OFFLINE = "offline"  # no socket (before the first, between reconnects)
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_WELCOME = "await_welcome"
    JOINING = "joining"  # join sent, no roster yet
    JOINED = "joined"
    ENDED = "ended"  # refused: nothing more will happen


_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.OFFLINE: frozenset({Phase.AWAIT_CHALLENGE}),
    Phase.AWAIT_CHALLENGE: frozenset({Phase.AWAIT_WELCOME, Phase.OFFLINE, Phase.ENDED}),
    Phase.AWAIT_WELCOME: frozenset({Phase.JOINING, Phase.OFFLINE, Phase.ENDED}),
    Phase.JOINING: frozenset({Phase.JOINED, Phase.OFFLINE, Phase.ENDED}),
    Phase.JOINED: frozenset({Phase.OFFLINE, Phase.ENDED}),
    Phase.ENDED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """We (not the rendezvous) tried a transition the table does not allow: a bug of ours."""


@dataclass(slots=True)
class SignallingStatistics:
    connects: int = 0
    disconnects: int = 0
    signals_sent: int = 0
    signals_received: int = 0
    signals_dropped: int = 0
    malformed: int = 0
    connected: bool = False
    relay_sent: int = 0  # frames
    relay_received: int = 0
    relay_dropped: int = 0  # not joined, the server does not relay, or the outbox was full


def _excerpt(text: str) -> str:
    return text[:EXCERPT]


def _text_field(message: dict[str, Any], field: str, limit: int = 200) -> str:
    """A field the rendezvous should send as a string, made safe to log whatever it sent."""
    value = message.get(field)
    return value[:limit] if isinstance(value, str) else "?"


class SignallingProtocol:
    """One player's side of the rendezvous protocol, across reconnects (see the module docstring)."""

    def __init__(
        self,
        *,
        signing_key: SigningKey,
        name: str,
        game: str,
        room: str | None,
        capacity: int | None = None,
        standby: str | None = None,
        password_token: str | None = None,
    ) -> None:
        self.key = bytes(signing_key.verify_key)
        self.room = room  # after the first join, the room's name as the server gave it
        self.standby = standby
        self.password_token = password_token  # what the rendezvous sees instead of the password
        self.roster: Roster | None = None
        self.ice_servers: tuple[IceServer, ...] = ()  # the latest welcome's, `joined`'s or renewal
        # Whose program the rendezvous of the latest welcome is (None: a standalone server, never
        # replaced); `welcomed` says whether there was a welcome at all.
        self.hosted_by: bytes | None = None
        self.welcomed = False
        self.relay: RelayLimits | None = None  # the latest welcome's; None: it does not relay
        self.stats = SignallingStatistics()
        self._signing_key = signing_key
        self._name, self._game, self._capacity = name, game, capacity
        self._room_capacity = min(capacity or MAX_CAPACITY, MAX_CAPACITY)  # as `joined` says
        self._phase = Phase.OFFLINE
        self._outbox: list[str | bytes] = []
        self._queued_signals = 0
        self._queued_relay = 0  # bytes
        self._deadline: float | None = None  # of the handshake or the join
        self._previous: dict[bytes, Member] = {}  # the roster before the last reconnect
        self._grace_until = 0.0
        self._grace_roster: Roster | None = None  # the server's roster, once the grace ends

    # ---- state ---------------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def joined(self) -> bool:
        return self._phase is Phase.JOINED

    def _enter(self, phase: Phase) -> None:
        if phase not in _TRANSITIONS[self._phase]:
            raise IllegalTransition(f"{self._phase.value} -> {phase.value}")
        self._phase = phase

    # ---- the adapter's calls -------------------------------------------------------------------

    def connection_made(self, now: float) -> None:
        self._enter(Phase.AWAIT_CHALLENGE)
        self._outbox.clear()
        self._queued_signals = 0
        self._deadline = now + HANDSHAKE_TIMEOUT

    def connection_lost(self) -> None:
        """The socket is gone (any phase; a second call changes nothing)."""
        if self._phase in (Phase.OFFLINE, Phase.ENDED):
            return
        if self.roster is not None:
            self._previous = {m.key: m for m in self.roster.members}
        self._enter(Phase.OFFLINE)
        self._gone()

    def _gone(self) -> None:
        if self.stats.connected:
            self.stats.disconnects += 1
        self.stats.connected = False
        self._outbox.clear()
        self._queued_signals = self._queued_relay = 0
        self._deadline = None

    def data_to_send(self) -> list[str | bytes]:
        frames, self._outbox = self._outbox, []
        self._queued_signals = self._queued_relay = 0
        return frames

    def send_relay(self, to: bytes, frame: bytes) -> bool:
        """Queue a mesh frame for the relay; False (dropped, counted) unless joined to a server
        that relays, or when too much waits already: the mesh's replica resyncs after a gap."""
        size = len(frame)
        full = self._queued_relay + size > RELAY_OUTBOX_BYTES
        if not self.joined or self.relay is None or full or size > wire.RELAY_MAX_PAYLOAD:
            self.stats.relay_dropped += 1
            return False
        self._outbox.append(to + frame)
        self._queued_relay += size
        self.stats.relay_sent += 1
        return True

    def send_signal(self, to: bytes, data: dict[str, Any]) -> None:
        """Queue a signal; dropped (and counted) unless joined: the mesh will retry."""
        if not self.joined or self._queued_signals >= OUTBOX_SIZE:
            self.stats.signals_dropped += 1
            return
        self._outbox.append(json.dumps({"type": "signal", "to": to.hex(), "data": data}))
        self._queued_signals += 1
        self.stats.signals_sent += 1

    def get_timer(self) -> float | None:
        """When `handle_timer` should next be called, or None."""
        times = [t for t in (self._deadline, self._grace_deadline()) if t is not None]
        return min(times) if times else None

    def _grace_deadline(self) -> float | None:
        return self._grace_until if self._grace_roster is not None and self.joined else None

    def handle_timer(self, now: float) -> list[SignallingEvent]:
        if self._deadline is not None and now >= self._deadline:
            return self._drop(f"timed out in phase {self._phase.value}")
        deadline = self._grace_deadline()
        if deadline is not None and now >= deadline:
            return self._end_grace()
        return []

    def receive_binary(self, data: bytes) -> list[SignallingEvent]:
        """A relayed frame: the sender's key, then its bytes (judged by the mesh, not here)."""
        if self._phase in (Phase.OFFLINE, Phase.ENDED):
            return []
        if not self.joined or self.relay is None:
            return self._bad("a binary frame outside the relay", repr(data[:EXCERPT]))
        sender, frame = data[: wire.RELAY_KEY_SIZE], data[wire.RELAY_KEY_SIZE :]
        if len(sender) != wire.RELAY_KEY_SIZE or not frame:
            return self._bad("a relayed frame too short", repr(data[:EXCERPT]))
        self.stats.relay_received += 1
        return [RelayReceived(sender, frame)]

    def receive_text(self, text: str, now: float) -> list[SignallingEvent]:
        if self._phase in (Phase.OFFLINE, Phase.ENDED):
            return []  # after we decided to close: whatever was in flight does not count
        try:
            message = wire.json_object(text)
        except wire.FrameError as exc:
            return self._bad(str(exc), _excerpt(text))
        kind = message.get("type")
        if not isinstance(kind, str):
            return self._bad("no 'type' string", _excerpt(text))
        match self._phase:
            case Phase.AWAIT_CHALLENGE:
                return self._challenge(message, kind, now)
            case Phase.AWAIT_WELCOME:
                return self._welcome(message, kind, now)
            case _:
                return self._in_room(message, kind, text, now)

    # ---- the handshake -------------------------------------------------------------------------

    def _challenge(self, message: dict[str, Any], kind: str, now: float) -> list[SignallingEvent]:
        if kind == "error":
            return self._error(message, handshake=True)
        nonce, version = message.get("nonce"), message.get("version")
        if kind != "challenge" or not wire.is_nonce(nonce):
            return self._drop(f"expected a challenge, got {kind[:40]!r}")
        if isinstance(version, bool) or (version is not None and not isinstance(version, int)):
            return self._drop(f"a challenge whose version is {str(version)[:40]!r}")
        if isinstance(version, int) and version != wire.PROTOCOL_VERSION:
            # Without a version the hello goes out, and the server judges it (PROTOCOL.md).
            return self._refuse(
                "version_mismatch",
                f"The rendezvous speaks protocol version {version}; this msxsync speaks version "
                f"{wire.PROTOCOL_VERSION}.",
            )
        proof = wire.signed_hello_bytes(bytes.fromhex(nonce))
        hello = {
            "type": "hello",
            "version": wire.PROTOCOL_VERSION,
            "name": self._name,
            "key": self.key.hex(),
            "signature": self._signing_key.sign(proof).signature.hex(),
        }
        self._outbox.append(json.dumps(hello))
        self._enter(Phase.AWAIT_WELCOME)
        self._deadline = now + HANDSHAKE_TIMEOUT
        return []

    def _welcome(self, message: dict[str, Any], kind: str, now: float) -> list[SignallingEvent]:
        if kind == "error":
            return self._error(message, handshake=True)
        if kind != "welcome":
            return self._drop(f"expected welcome, got {kind[:40]!r}")
        self._enter(Phase.JOINING)
        self.stats.connected = True
        self.stats.connects += 1
        self._deadline = now + JOIN_TIMEOUT
        join = {
            "type": "join",
            "game": self._game,
            "room": self.room,
            "password": self.password_token,
            "capacity": self._capacity,
            "standby": self.standby,
        }
        self._outbox.append(json.dumps(join))
        self.ice_servers, problems = parse_ice_servers(message.get("ice_servers"))
        bad: list[SignallingEvent] = []
        for problem in problems:
            self.stats.malformed += 1
            bad.append(BadMessage(problem, _excerpt(json.dumps(message.get("ice_servers")))))
        self.relay = parse_relay_limits(message.get("relay"))
        hosted_by = message.get("hosted_by")
        self.hosted_by, self.welcomed = parse_key(hosted_by), True
        if hosted_by is not None and self.hosted_by is None:
            self.stats.malformed += 1  # taken for a standalone server: the safe reading
            bad.append(BadMessage("'hosted_by' is not a key", _excerpt(json.dumps(hosted_by))))
        return [*bad, Welcomed(self.ice_servers, self.hosted_by)]

    # ---- in the room ---------------------------------------------------------------------------

    def _in_room(self, message: dict[str, Any], kind: str, text: str, now: float) -> list[SignallingEvent]:
        match kind:
            case "joined" | "roster":
                events = self._roster(message, text, now)
                if kind == "joined" and any(isinstance(e, RosterChanged) for e in events):
                    return self._new_ice_servers(message) + events  # before the mesh dials
                return events
            case "ice_servers":
                if message.get("room") != self.room or not self.joined:
                    return self._bad("ICE servers for another room", _excerpt(text))
                return self._new_ice_servers(message)
            case "signal":
                return self._signal(message, text)
            case "error":
                return self._error(message, handshake=False)
            case "kicked":
                return self._refuse("kicked", "the host removed us from the room")
            case "member_left" | "member_kicked":
                key = parse_key(message.get("key"))
                if key is not None:
                    self._previous.pop(key, None)
                return []
            case _:
                return []  # member_joined, member_ready, chat...: the roster that follows says it all

    def _roster(self, message: dict[str, Any], text: str, now: float) -> list[SignallingEvent]:
        roster = parse_roster(message)
        if roster is None:
            return self._bad("a malformed roster", _excerpt(text))
        if self.key not in roster.keys:
            return self._bad("a roster that does not list us", _excerpt(text))
        if message.get("type") == "joined" and "capacity" in message:  # (absent: an older server)
            capacity = message["capacity"]
            if not isinstance(capacity, int) or not 2 <= capacity <= MAX_CAPACITY:
                return self._bad(f"a room capacity of {capacity!r}", _excerpt(text))
            self._room_capacity = capacity
        if len(roster.members) > self._room_capacity:
            detail = f"a roster of {len(roster.members)} members in a room for {self._room_capacity}"
            return self._bad(detail, _excerpt(text))
        if self._phase is Phase.JOINING:
            if self.room is not None and roster.room != self.room:
                return self._bad(f"a roster of another room than {self.room!r}", _excerpt(text))
            self.room = roster.room  # rejoin quick-match rooms by the name we were given
            self._grace_until = now + REJOIN_GRACE
            self._deadline = None
            self._enter(Phase.JOINED)
        elif roster.room != self.room:
            return self._bad(f"a roster of another room than {self.room!r}", _excerpt(text))
        if now < self._grace_until:
            # Right after a rejoin, members of the old roster that have not rejoined yet are kept.
            present = {m.key for m in roster.members}
            kept = tuple(m for k, m in self._previous.items() if k not in present)
            self._grace_roster = roster if kept else None
            roster = Roster(roster.room, roster.host, roster.members + kept, roster.past)
        else:
            self._previous = {}
            self._grace_roster = None
        self.roster = roster
        return [RosterChanged(roster)]

    def _new_ice_servers(self, message: dict[str, Any]) -> list[SignallingEvent]:
        """A member's STUN and TURN (`joined`, or a renewal before the credentials expire); a
        `joined` without them (an older rendezvous) keeps the welcome's."""
        if "ice_servers" not in message:
            return []
        self.ice_servers, problems = parse_ice_servers(message.get("ice_servers"))
        self.stats.malformed += len(problems)
        excerpt = _excerpt(json.dumps(message.get("ice_servers")))
        bad: list[SignallingEvent] = [BadMessage(problem, excerpt) for problem in problems]
        return [*bad, IceServersChanged(self.ice_servers)]

    def _end_grace(self) -> list[SignallingEvent]:
        """Members kept through a rejoin that never came back are dropped when the grace ends."""
        server, self._grace_roster = self._grace_roster, None
        self._previous = {}
        if server is None or self.roster is None:
            return []
        self.roster = Roster(server.room, self.roster.host, server.members, server.past)
        return [RosterChanged(self.roster)]

    def _signal(self, message: dict[str, Any], text: str) -> list[SignallingEvent]:
        sender, data = parse_key(message.get("from")), message.get("data")
        if sender is None or not isinstance(data, dict):
            return self._bad("a malformed signal", _excerpt(text))
        self.stats.signals_received += 1
        return [SignalReceived(sender, data)]

    # ---- errors and endings --------------------------------------------------------------------

    def _error(self, message: dict[str, Any], *, handshake: bool) -> list[SignallingEvent]:
        code, text = _text_field(message, "code", 40), _text_field(message, "message")
        joining = self._phase is not Phase.JOINED
        if joining and self.roster is not None and code in JOIN_REFUSALS - REJOIN_FINAL:
            return self._rejoin_refused(code, text)
        if code in FATAL_CODES or (joining and code in JOIN_REFUSALS):
            return self._refuse(code, text)
        if handshake or (joining and code in RETRY_JOIN) or message.get("fatal") is True:
            return self._drop(f"{code}: {text}")
        return [Notice(code, text)]

    def _bad(self, reason: str, excerpt: str) -> list[SignallingEvent]:
        self.stats.malformed += 1
        if self._phase in (Phase.AWAIT_CHALLENGE, Phase.AWAIT_WELCOME):
            return [BadMessage(reason, excerpt), *self._drop(f"{reason} during the handshake")]
        return [BadMessage(reason, excerpt)]

    def _drop(self, reason: str) -> list[SignallingEvent]:
        self.connection_lost()
        return [Disconnect(reason)]

    def _rejoin_refused(self, code: str, message: str) -> list[SignallingEvent]:
        """Not the end: we were in this room, and the peers we have are still ours."""
        self.connection_lost()
        return [RejoinRefused(code, message), Disconnect(f"rejoin refused: {code}", REJOIN_RETRY)]

    def _refuse(self, code: str, message: str) -> list[SignallingEvent]:
        self._enter(Phase.ENDED)
        self._gone()
        return [Refused(code, message)]
