"""The signalling client: one WebSocket to the rendezvous (protocol version 1, PROTOCOL.md).

It owns that connection and nothing else: it proves our key (hello), joins the room, reports the
roster and relays `signal` messages both ways. If the rendezvous goes away it reconnects with
exponential backoff and joins the same room again (by the name it was given, so quick-match
rooms are found again); meanwhile the mesh keeps its established links, since game traffic never
passes through here. Right after a rejoin, members that were in the roster before are kept for
`REJOIN_GRACE` seconds unless they are reported gone, so peers that have not rejoined yet are not
torn down by a partial roster.

A refusal that retrying cannot fix (wrong password, room full, unknown game, version mismatch)
ends `run()` with `SignallingRefused`. Everything the server sends is validated; anything
malformed is logged and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from nacl.signing import SigningKey

from peer.core.binding import rendezvous_password

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
HELLO_DOMAIN = b"msxsync-rendezvous-hello\x00"
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
REJOIN_GRACE = 10.0
OUTBOX_SIZE = 256  # signals queued while the socket is busy; beyond that they are dropped
# Before we are in the room: errors worth retrying (the server was busy) and final refusals.
_STANDBY = re.compile(r"^https?://(\[[0-9a-fA-F:.]{2,45}\]|[A-Za-z0-9.-]{1,63}):[0-9]{1,5}$")
_RETRY_JOIN = frozenset({"busy", "try_again", "too_many_rooms", "rate_limited"})
_JOIN_REFUSALS = frozenset(
    {
        "unknown_game",
        "wrong_game",
        "room_full",
        "password_required",
        "wrong_password",
        "banned",
        "bad_message",
    }
)
_FATAL_CODES = frozenset({"version_mismatch", "bad_signature", "replaced"})
_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")


class SignallingRefused(Exception):
    """The rendezvous refused us for a reason that retrying will not fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class _Reconnect(Exception):
    """This connection is over; try again after the backoff."""


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

    @property
    def keys(self) -> list[bytes]:
        return [member.key for member in self.members]


class SignallingListener(Protocol):
    def roster_changed(self, roster: Roster) -> None: ...
    def signal_received(self, sender: bytes, data: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class SignallingStatistics:
    connects: int = 0
    disconnects: int = 0
    signals_sent: int = 0
    signals_received: int = 0
    signals_dropped: int = 0
    malformed: int = 0
    connected: bool = False


def _key(text: Any) -> bytes | None:
    if isinstance(text, str) and _HEX_KEY.match(text):
        return bytes.fromhex(text)
    return None


def parse_roster(message: dict[str, Any]) -> Roster | None:
    """A `joined` or `roster` message as a Roster, or None if malformed."""
    room, host, members = message.get("room"), _key(message.get("host")), message.get("members")
    if not isinstance(room, str) or host is None or not isinstance(members, list):
        return None
    parsed = []
    for item in members:
        key = _key(item.get("key")) if isinstance(item, dict) else None
        if key is None or not isinstance(item.get("name"), str):
            return None
        standby = item.get("standby")
        standby = standby if isinstance(standby, str) and _STANDBY.match(standby) else None
        parsed.append(Member(key, item["name"], item.get("ready") is True, standby))
    return Roster(room, host, tuple(parsed))


class SignallingClient:
    """Stays connected to the rendezvous and in the room; implements the mesh's `SignalSender`."""

    def __init__(
        self,
        url: str,
        *,
        signing_key: SigningKey,
        name: str,
        game: str,
        room: str | None,
        password: str | None,
        listener: SignallingListener,
        capacity: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        standby: str | None = None,
    ) -> None:
        self.url = url.rstrip("/") + "/ws"
        self.standby = standby
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._retargeted = False
        self._wake_retry = asyncio.Event()
        self._password_token: str | None = None  # what the rendezvous sees instead of the password
        self._grace_timer: asyncio.TimerHandle | None = None
        self.key = bytes(signing_key.verify_key)
        self.room = room
        self._signing_key = signing_key
        self._name, self._game, self._password, self._capacity = name, game, password, capacity
        self._listener = listener
        self._clock = clock
        self._outbox: asyncio.Queue[str] | None = None
        self._previous: dict[bytes, Member] = {}
        self._grace_until = 0.0
        self._joined = asyncio.Event()
        self._changed = asyncio.Event()
        self.roster: Roster | None = None
        self.stats = SignallingStatistics()

    # ---- the mesh's side -------------------------------------------------------------------

    def send_signal(self, to: bytes, data: dict[str, Any]) -> None:
        """Queue a signal; dropped (and counted) while disconnected: the mesh will retry."""
        message = json.dumps({"type": "signal", "to": to.hex(), "data": data})
        if self._outbox is None or not self._joined.is_set() or self._outbox.full():
            self.stats.signals_dropped += 1
            return
        self._outbox.put_nowait(message)
        self.stats.signals_sent += 1

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Until `condition()` holds, re-checked whenever the connection or roster changes."""
        while not condition():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def joined(self) -> bool:
        """In the room now (False while reconnecting)."""
        return self._joined.is_set()

    async def wait_joined(self) -> Roster:
        await self._joined.wait()
        if self.roster is None:
            raise RuntimeError("joined without a roster")
        return self.roster

    # ---- the connection loop ---------------------------------------------------------------

    async def run(self) -> None:
        """Connect, join, serve; reconnect with backoff forever, or raise SignallingRefused."""
        backoff = BACKOFF_FIRST
        if self._password is not None and self._password_token is None:
            if self.room is None:
                raise ValueError("quick-match rooms have no password")
            # Argon2id costs ~0.1 s of CPU: keep the event loop free meanwhile.
            self._password_token = await asyncio.to_thread(rendezvous_password, self._password, self.room)
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await self._connection(session)
                except (_Reconnect, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.info("rendezvous connection lost (%s); retrying in %.1f s", exc, backoff)
                if self._joined.is_set() or self._retargeted:
                    backoff = BACKOFF_FIRST  # it worked for a while, or there is a new host: start over
                self._disconnected()
                if self._retargeted:
                    self._retargeted = False
                    continue
                self._wake_retry.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_retry.wait(), backoff)  # `retarget` ends it
                backoff = min(BACKOFF_MAX, backoff * 2)

    async def retarget(self, url: str) -> None:
        """Move to another rendezvous (a peer that took over hosting) and rejoin the same room."""
        self.url = url.rstrip("/") + "/ws"
        self._retargeted = True
        self._wake_retry.set()
        if self._ws is not None:
            await self._ws.close()

    def _disconnected(self) -> None:
        self._ws = None
        if self.stats.connected:
            self.stats.disconnects += 1
        self.stats.connected = False
        self._joined.clear()
        self._outbox = None
        self._notify()
        if self.roster is not None:
            self._previous = {m.key: m for m in self.roster.members}

    async def _connection(self, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(self.url, heartbeat=10.0, max_msg_size=256 * 1024) as ws:
            self._ws = ws
            await self._handshake(ws)
            self.stats.connected = True
            self.stats.connects += 1
            self._notify()
            await ws.send_str(json.dumps(self._join_message()))
            self._outbox = asyncio.Queue(OUTBOX_SIZE)
            # The writer lives exactly as long as this connection's reader (no TaskGroup here,
            # so that SignallingRefused reaches `run`'s caller as itself, not in a group).
            writer = asyncio.create_task(self._write(ws, self._outbox))
            try:
                await self._read(ws)
            finally:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, OSError):
                    await writer
            raise _Reconnect("the rendezvous closed the connection")

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        challenge = await self._receive_json(ws)
        self._check_error(challenge)
        nonce = challenge.get("nonce")
        if challenge.get("type") != "challenge" or not isinstance(nonce, str) or len(nonce) != 64:
            raise _Reconnect(f"expected a challenge, got {challenge.get('type')!r}")
        signature = self._signing_key.sign(HELLO_DOMAIN + bytes.fromhex(nonce)).signature
        hello = {
            "type": "hello",
            "version": PROTOCOL_VERSION,
            "name": self._name,
            "key": self.key.hex(),
            "signature": signature.hex(),
        }
        await ws.send_str(json.dumps(hello))
        welcome = await self._receive_json(ws)
        self._check_error(welcome)
        if welcome.get("type") != "welcome":
            raise _Reconnect(f"expected welcome, got {welcome.get('type')!r}")

    def _join_message(self) -> dict[str, Any]:
        return {
            "type": "join",
            "game": self._game,
            "room": self.room,
            "password": self._password_token,
            "capacity": self._capacity,
            "standby": self.standby,
        }

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, outbox: asyncio.Queue[str]) -> None:
        while True:
            await ws.send_str(await outbox.get())

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for frame in ws:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                break
            message = self._parse(frame.data)
            if message is not None:
                self._dispatch(message)

    async def _receive_json(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
        async with asyncio.timeout(10):
            frame = await ws.receive()
        if frame.type is not aiohttp.WSMsgType.TEXT:
            raise _Reconnect(f"connection ended during the handshake ({frame.type.name})")
        message = self._parse(frame.data)
        if message is None:
            raise _Reconnect("garbage during the handshake")
        return message

    def _parse(self, text: str) -> dict[str, Any] | None:
        with contextlib.suppress(ValueError):
            message = json.loads(text)
            if isinstance(message, dict) and isinstance(message.get("type"), str):
                return message
        self.stats.malformed += 1
        log.warning("malformed message from the rendezvous: %.80r", text)
        return None

    # ---- messages --------------------------------------------------------------------------

    def _dispatch(self, message: dict[str, Any]) -> None:
        match message["type"]:
            case "joined" | "roster":
                self._roster(message)
            case "signal":
                self._signal(message)
            case "error":
                self._error(message)
            case "kicked":
                raise SignallingRefused("kicked", "the host removed us from the room")
            case "member_left" | "member_kicked":
                key = _key(message.get("key"))
                if key is not None:
                    self._previous.pop(key, None)
            case _:
                pass  # member_joined, member_ready, chat...: the roster that follows says it all

    def _roster(self, message: dict[str, Any]) -> None:
        roster = parse_roster(message)
        if roster is None:
            self.stats.malformed += 1
            log.warning("malformed roster from the rendezvous")
            return
        if not self._joined.is_set():
            self.room = roster.room  # rejoin quick-match rooms by the name we were given
            self._grace_until = self._clock() + REJOIN_GRACE
            self._joined.set()
        if self._clock() < self._grace_until:
            present = {m.key for m in roster.members}
            kept = [m for k, m in self._previous.items() if k not in present]
            if kept:
                self._schedule_grace_end(roster)
            roster = Roster(roster.room, roster.host, roster.members + tuple(kept))
        else:
            self._previous = {}
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None
        self.roster = roster
        self._listener.roster_changed(roster)
        self._notify()

    def _schedule_grace_end(self, server_roster: Roster) -> None:
        """Members kept through a rejoin that never came back are dropped when the grace ends."""
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        delay = max(0.0, self._grace_until - self._clock())
        self._grace_timer = asyncio.get_running_loop().call_later(delay, self._end_grace, server_roster)

    def _end_grace(self, server_roster: Roster) -> None:
        self._grace_timer = None
        if self.roster is not None and self.roster.room == server_roster.room and self._joined.is_set():
            self._previous = {}
            self.roster = Roster(server_roster.room, self.roster.host, server_roster.members)
            self._listener.roster_changed(self.roster)
            self._notify()

    def _signal(self, message: dict[str, Any]) -> None:
        sender, data = _key(message.get("from")), message.get("data")
        if sender is None or not isinstance(data, dict):
            self.stats.malformed += 1
            return
        self.stats.signals_received += 1
        self._listener.signal_received(sender, data)

    def _error(self, message: dict[str, Any]) -> None:
        code = str(message.get("code"))
        text = str(message.get("message"))
        joining = not self._joined.is_set()
        if code in _FATAL_CODES or (joining and code in _JOIN_REFUSALS):
            raise SignallingRefused(code, text)
        if (joining and code in _RETRY_JOIN) or message.get("fatal") is True:
            raise _Reconnect(f"{code}: {text}")
        log.info("rendezvous error %s: %s", code, text)

    def _check_error(self, message: dict[str, Any]) -> None:
        if message.get("type") == "error":
            self._error({**message, "fatal": True})
