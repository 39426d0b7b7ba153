"""The signalling client: the asyncio/aiohttp adapter around `peer.core.room.signalling`.

It owns one WebSocket to the rendezvous at a time and nothing else. What is said on it, and how
what the rendezvous says is judged, is the pure `SignallingProtocol`; this adapter feeds it
frames and timer ticks (monotonic time), writes what it queues, and acts on its events: rosters
and signals go to the listener, bad messages are logged, `Disconnect` closes the socket and
reconnects with exponential backoff (joining the same room again by the name it was given, so
quick-match rooms are found again), `Refused` ends `run()` with `SignallingRefused`; a refused
**re**join (`RejoinRefused`) is only reported to `on_rejoin_refused` and tried again later. Meanwhile
the mesh keeps its established direct links, since their traffic never passes through here; only
a peer reached through the rendezvous's relay (binary frames, `send_relay` / `relay_received`)
depends on this connection.

No frame from the rendezvous can end the session except a refusal PROTOCOL.md lists: malformed
JSON (deep nesting included), wrong shapes, binary frames and messages out of order are logged
protocol errors (tests/test_signalling_hostile.py plays a hostile rendezvous on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
from nacl.signing import SigningKey

from peer.core.mesh.binding import rendezvous_password
from peer.core.room.signalling import (
    BadMessage,
    Disconnect,
    IceServer,
    IceServersChanged,
    Notice,
    Refused,
    RejoinRefused,
    RelayReceived,
    RosterChanged,
    SignallingEvent,
    SignallingProtocol,
    SignallingStatistics,
    SignalReceived,
    Welcomed,
)
from peer.core.room.signalling import Roster as Roster

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 3.0  # a blip must heal within seconds (issue 17): retry at least this often
CONNECT_TIMEOUT = 4.0
HEARTBEAT = 6.0  # a ping this often, and the connection is given up 3 s after one goes unanswered
MAX_FRAME = 256 * 1024  # aiohttp ends the connection (a reconnect) on anything larger


class SignallingRefused(Exception):
    """The rendezvous refused us for a reason that retrying will not fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class _Reconnect(Exception):
    """This connection is over; try again after the backoff (and at least `retry_after` s)."""

    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class SignallingListener(Protocol):
    def roster_changed(self, roster: Roster) -> None: ...
    def signal_received(self, sender: bytes, data: dict[str, Any]) -> None: ...
    def relay_received(self, sender: bytes, frame: bytes) -> None: ...


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
        tls: ssl.SSLContext | None = None,
        on_rejoin_refused: Callable[[str, str], None] | None = None,
        on_ice_servers: Callable[[], None] | None = None,
    ) -> None:
        """`on_rejoin_refused(code, message)`: the rendezvous would not let us back into the room
        we were in (the client carries on, and tries again later). `on_ice_servers` is called when
        `ice_servers` changed: a member's TURN credentials, in `joined` and renewed before they
        expire."""
        self.url = url.rstrip("/") + "/ws"
        self._on_rejoin_refused = on_rejoin_refused
        self._on_ice_servers = on_ice_servers
        self._tls: ssl.SSLContext | bool = True if tls is None else tls  # True: verify, system CAs
        self._protocol = SignallingProtocol(
            signing_key=signing_key, name=name, game=game, room=room, capacity=capacity, standby=standby
        )
        self._password = password
        self._listener = listener
        self._clock = clock
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._retargeted = False
        self._wake_retry = asyncio.Event()
        self._wake_writer = asyncio.Event()
        self._joined = asyncio.Event()
        self._changed = asyncio.Event()

    # ---- what the protocol object knows --------------------------------------------------------

    @property
    def key(self) -> bytes:
        return self._protocol.key

    @property
    def room(self) -> str | None:
        return self._protocol.room

    @property
    def standby(self) -> str | None:
        return self._protocol.standby

    @property
    def roster(self) -> Roster | None:
        return self._protocol.roster

    @property
    def ice_servers(self) -> tuple[IceServer, ...]:
        """The STUN and TURN servers the rendezvous named last: the welcome's STUN, then in the
        room STUN and TURN, with TURN credentials renewed while we are a member."""
        return self._protocol.ice_servers

    @property
    def hosted_by(self) -> bytes | None:
        """Whose program the rendezvous is (latest welcome); None: a standalone server."""
        return self._protocol.hosted_by

    @property
    def welcomed(self) -> bool:
        """Whether any rendezvous ever welcomed us (before that, `hosted_by` means nothing)."""
        return self._protocol.welcomed

    @property
    def stats(self) -> SignallingStatistics:
        return self._protocol.stats

    @property
    def joined(self) -> bool:
        """In the room now (False while reconnecting)."""
        return self._joined.is_set()

    # ---- the mesh's side -----------------------------------------------------------------------

    def send_signal(self, to: bytes, data: dict[str, Any]) -> None:
        """Queue a signal; dropped (and counted) while disconnected: the mesh will retry."""
        self._protocol.send_signal(to, data)
        self._wake_writer.set()

    def relay_available(self) -> bool:
        """Whether the rendezvous relays mesh frames (its latest welcome said so) and we are in."""
        return self._protocol.relay is not None and self._protocol.joined

    def send_relay(self, to: bytes, frame: bytes) -> bool:
        """Queue a mesh frame for the relay; False when it was dropped (the mesh resyncs later)."""
        queued = self._protocol.send_relay(to, frame)
        self._wake_writer.set()
        return queued

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Until `condition()` holds, re-checked whenever the connection or roster changes."""
        while not condition():
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_joined(self) -> Roster:
        await self._joined.wait()
        if self.roster is None:
            raise RuntimeError("joined without a roster")
        return self.roster

    # ---- the connection loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, join, serve; reconnect with backoff forever, or raise SignallingRefused."""
        backoff = BACKOFF_FIRST
        if self._password is not None and self._protocol.password_token is None:
            if self.room is None:
                raise ValueError("quick-match rooms have no password")
            # Argon2id costs ~0.1 s of CPU: keep the event loop free meanwhile.
            token = await asyncio.to_thread(rendezvous_password, self._password, self.room)
            self._protocol.password_token = token
        # A connect that hangs (a pulled cable swallows the SYN) gives up in CONNECT_TIMEOUT, so
        # the next try, after the backoff, is never more than a few seconds behind the network.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, connect=CONNECT_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                at_least = 0.0  # what the protocol asked for (a refused rejoin waits longer)
                try:
                    await self._connection(session)
                except (_Reconnect, aiohttp.ClientError, OSError, TimeoutError) as exc:
                    at_least = exc.retry_after if isinstance(exc, _Reconnect) else 0.0
                    wait = max(backoff, at_least)
                    log.info("rendezvous connection lost (%s); retrying in %.1f s", exc, wait)
                if self._joined.is_set() or self._retargeted:
                    backoff = BACKOFF_FIRST  # it worked for a while, or there is a new host: start over
                self._disconnected()
                if self._retargeted:
                    self._retargeted = False
                    continue
                self._wake_retry.clear()
                with contextlib.suppress(TimeoutError):  # (not wait_for: it may swallow a cancel on 3.11)
                    async with asyncio.timeout(max(backoff, at_least)):
                        await self._wake_retry.wait()  # `retarget` ends it
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
        self._protocol.connection_lost()
        self._joined.clear()
        self._notify()

    async def _connection(self, session: aiohttp.ClientSession) -> None:
        """One connection, until the protocol or the network ends it: always raises."""
        connecting = session.ws_connect(self.url, heartbeat=HEARTBEAT, max_msg_size=MAX_FRAME, ssl=self._tls)
        async with connecting as ws:
            self._ws = ws
            self._protocol.connection_made(self._clock())
            self._wake_writer = asyncio.Event()
            # The writer lives exactly as long as this connection's reader. Neither raises, so
            # the group ends only by the reader's return (or cancellation): the outcome is raised
            # after it, as itself, not wrapped in an ExceptionGroup.
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(self._write(ws, self._wake_writer))
                outcome = await self._read(ws)
                writer.cancel()
            raise outcome

    async def _write(self, ws: aiohttp.ClientWebSocketResponse, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            for frame in self._protocol.data_to_send():
                try:
                    if isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_str(frame)
                except (aiohttp.ClientError, ConnectionError) as exc:
                    log.info("cannot write to the rendezvous: %s", exc)
                    await ws.close()  # the reader sees the end and reports it
                    return

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> Exception:
        """Feed frames and timer ticks to the protocol until it or the network ends the connection."""
        while True:
            timer = self._protocol.get_timer()
            # aiohttp reads a timeout of 0 as "none": wait at least a millisecond.
            timeout = None if timer is None else max(0.001, timer - self._clock())
            try:
                frame = await ws.receive(timeout=timeout)
            except TimeoutError:
                events = self._protocol.handle_timer(self._clock())
            else:
                if frame.type is aiohttp.WSMsgType.TEXT:
                    events = self._protocol.receive_text(frame.data, self._clock())
                elif frame.type is aiohttp.WSMsgType.BINARY:
                    events = self._protocol.receive_binary(frame.data)
                else:  # CLOSE, CLOSED, ERROR (a frame over MAX_FRAME, bad UTF-8, a dead socket)
                    return _Reconnect(f"the rendezvous closed the connection ({frame.type.name})")
            self._wake_writer.set()
            outcome = self._act(events)
            if outcome is not None:
                return outcome

    def _act(self, events: list[SignallingEvent]) -> Exception | None:
        """Do what the events say; the exception that ends this connection, if one does."""
        for event in events:
            match event:
                case Welcomed():
                    self._notify()
                case IceServersChanged():
                    if self._on_ice_servers is not None:
                        self._on_ice_servers()
                case RosterChanged(roster):
                    if self._protocol.joined:
                        self._joined.set()
                    self._listener.roster_changed(roster)
                    self._notify()
                case SignalReceived(sender, data):
                    self._listener.signal_received(sender, data)
                case RelayReceived(sender, frame):
                    self._listener.relay_received(sender, frame)
                case BadMessage(reason, excerpt):
                    log.warning("bad message from the rendezvous (%s): %r", reason, excerpt)
                case Notice(code, message):
                    log.info("rendezvous error %s: %s", code, message)
                case RejoinRefused(code, message):
                    log.warning("the rendezvous refused our rejoin (%s): %s", code, message)
                    if self._on_rejoin_refused is not None:
                        self._on_rejoin_refused(code, message)
                case Disconnect(reason, retry_after):
                    return _Reconnect(reason, retry_after)
                case Refused(code, message):
                    return SignallingRefused(code, message)
        return None
