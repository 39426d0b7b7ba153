"""The `/ws` endpoint: one WebSocket connection of the lobby and signalling protocol.

Owns the per-connection adapter around the pure `rendezvous.protocol`, `rendezvous.rooms` and
`rendezvous.fairness`: reading frames, the hello deadline (absolute: pings do not restart it),
the rate limits (the connection's messages and binary frames, and its source address's, which
outlive reconnects), the source's share of connections, password checks, relayed bytes and
roster changes, a room's budget of password guesses, a member's TURN credentials and their
renewal (`rendezvous.access`, `rendezvous.ice`), and the log line for every join, leave and
refusal. While the server restarts (SIGTERM) a hello or a join is answered as a new connection
is: `server_restarting`, close code 1012. Per connection, the handler reads (this coroutine) and
one writer task drains the `rendezvous.connection.Client` queue; both live in one TaskGroup. The
reader yields to the loop after every frame it passed on: aiohttp hands over frames already read
without yielding, so a sender's burst filled another member's queue before that member's writer
ran once, and got it evicted as a slow reader (issue 29, F3).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from rendezvous import protocol, wire
from rendezvous.connection import Client, Outgoing, encode, wire_size
from rendezvous.fairness import SendBacklog
from rendezvous.protocol import ProtocolError, RateLimiter
from rendezvous.relay import FrameLimiter
from rendezvous.rooms import Deliver, PasswordCheck, RoomError
from rendezvous.state import SERVER, SERVER_NAME, Server, log

HELLO_FIRST = "Say hello (answer the challenge) first."
RECIPIENT_BEHIND = (
    "The recipient has its share of relayed messages waiting (it reads too slowly); {} dropped."
)
# The reader yields after each frame it passed on, and after YIELD_EVERY refused ones in a row:
# a yield per refused frame made each cost a loop iteration (about 7x the work of refusing it).
YIELD_EVERY = 32
FLOOD_LINGER = 1.0  # seconds a flooding client has to take its error and close frame
ROSTER_CHANGES = {protocol.Join, protocol.Leave, protocol.Kick, protocol.Ready}  # each sends a roster
RESTARTING = "The server is restarting; connect again in a moment."
ROOM_EVENTS = frozenset({"welcome", "join", "leave", "kick", "bye"})  # (log lines: see `note`)
TURN_RETRY = 60.0  # seconds before a member refused TURN credentials (its address's share) asks again


def tell_restarting(client: Client) -> None:
    """The fatal `server_restarting`, then close code 1012 (service restart): come back soon."""
    client.fail(ProtocolError("server_restarting", RESTARTING, fatal=True))
    client.close_code = WSCloseCode.SERVICE_RESTART


def note(event: str, client: Client, sentence: str, *args: object, **fields: Any) -> None:
    """One log line for one thing that happened to a client; `fields` go to JSON logs as they are.
    Never a password, hash or signature: only codes, names, rooms and the client's label.
    Sampled per source (`Server.sampled`): a flood is counted in a summary, not a line each;
    a welcomed player's own doings (all but refusals) have a share of the log of their own."""
    kind = f"{event} {fields.get('reason', '')}".strip()
    if not client.request.app[SERVER].sampled(client.source, kind, event=event in ROOM_EVENTS):
        return
    data = {"event": event, "source": client.source, "key": client.key, **fields}
    log.info(sentence + " (%s)", *args, client.label, extra={"event": data})


class ClientReader:
    """Reads one client's frames and turns them into lobby operations."""

    def __init__(self, server: Server, client: Client) -> None:
        self.server = server
        self.client = client
        self.config = server.config
        loop = asyncio.get_running_loop()
        self.clock = loop.time
        self.limiter = RateLimiter(self.config.rate, self.config.burst, self.clock())
        self.frames = FrameLimiter(self.config.relay.frame_rate, self.config.relay.frame_burst, self.clock())
        self.nonce = secrets.token_bytes(protocol.NONCE_SIZE)
        self.relay_spell = False  # relayed frames are being refused: the client was told
        self.renewal: asyncio.TimerHandle | None = None  # the member's next TURN credentials
        self.unyielded = 0  # frames handled since the reader last yielded

    async def run(self) -> None:
        try:
            await self._read()
        finally:
            if self.renewal is not None:
                self.renewal.cancel()

    async def _read(self) -> None:
        ws = self.client.ws
        self.client.send_json(protocol.challenge_message(self.nonce))
        deadline = self.clock() + self.config.hello_timeout
        while not self.client.closing:
            try:
                # Absolute: aiohttp's receive(timeout=) starts over on every ping it answers.
                async with asyncio.timeout_at(None if self.client.key else deadline):
                    msg = await ws.receive()
            except TimeoutError:
                self.server.refused("hello_timeout")
                self.client.fail(ProtocolError("hello_timeout", "No valid hello came in time."), fatal=True)
                return
            if msg.type == WSMsgType.TEXT:
                await self.on_text(msg.data)
                passed_on = True  # (maybe: messages are few, their rate is the lower one)
            elif msg.type == WSMsgType.BINARY:
                passed_on = self.on_binary(msg.data)
            else:  # CLOSE, CLOSING, CLOSED, ERROR (e.g. far too large a frame)
                return
            self.unyielded += 1
            if passed_on or self.unyielded >= YIELD_EVERY:
                self.unyielded = 0
                await asyncio.sleep(0)  # let the writers of those it queued for run (module docstring)

    def on_binary(self, data: bytes) -> bool:
        """A relayed mesh frame: RECIPIENT KEY (32 bytes) + the peers' sealed bytes, passed on as
        SENDER KEY + the same bytes, within the relay's limits (True), or dropped (PROTOCOL.md,
        "Relay")."""
        key, relay = self.client.key, self.server.relay
        if not self._admit_frame():
            return False
        if not self.config.relay.enabled:
            self.client.fail(ProtocolError("binary_not_supported", "This server does not relay."))
            return False
        if key is None:
            self.client.fail(ProtocolError("hello_required", HELLO_FIRST))
            return False
        room = self.server.lobby.room_of(key)
        payload = data[wire.RELAY_KEY_SIZE :]
        to = data[: wire.RELAY_KEY_SIZE].hex()
        problem = None
        if room is None:
            problem = ProtocolError("not_in_room", "Relayed frames go only to members of your room.")
        elif not payload or len(payload) > wire.RELAY_MAX_PAYLOAD:
            problem = ProtocolError("too_large", f"Relayed frames carry 1 to {wire.RELAY_MAX_PAYLOAD} bytes.")
        elif to == key or room.member(to) is None or to not in self.server.clients:
            problem = ProtocolError("bad_target", "Relayed frames go only to another member of your room.")
        if problem is not None or room is None:
            relay.drop(problem.code if problem is not None else "not_in_room")
            self._relay_refused(problem)
            return False
        now = self.clock()
        refusal = relay.admit(key, room.name, len(payload), now)
        if refusal is None and not self.server.sources.admit_relay(self.client.source, len(payload), now):
            refusal = relay.drop("address")
        if refusal is not None:
            self.server.metrics.rate_limited.labels(f"relay_{refusal}").inc()
            rate = self.config.relay.client_rate if refusal == "client" else self.config.relay.room_rate
            message = f"The relay carries at most {rate:g} bytes a second for each {refusal}; frame dropped."
            self._relay_refused(ProtocolError("rate_limited", message))
            return False
        if not self.server.clients[to].send(bytes.fromhex(key) + payload, relayed=True):
            relay.drop("recipient")
            self._relay_refused(ProtocolError("rate_limited", RECIPIENT_BEHIND.format("frame")))
            return False
        self.relay_spell = False
        self.server.metrics.relay_bytes.inc(len(payload))
        return True

    def _admit_frame(self) -> bool:
        """Every binary frame takes a token of the connection's frame bucket, whatever becomes of
        it; one that keeps sending while refused (a whole burst more) is cut off."""
        now = self.clock()
        verdict = self.frames.admit(now)
        if verdict == "ok" and not self.server.sources.admit_frame(self.client.source, now):
            verdict = self.frames.strike(now)  # the address's share, over all its connections
        if verdict == "ok":
            return True
        self.server.relay.drop("frame_rate")
        self.server.metrics.rate_limited.labels("relay_frames").inc()
        rate = f"{self.config.relay.frame_rate:g}"
        if verdict == "flood":
            self._cut_off(
                f"Too many binary frames (at most {rate} a second) while rate limited; disconnecting."
            )
        else:
            self._relay_refused(
                ProtocolError("rate_limited", f"At most {rate} binary frames a second; dropped.")
            )
        return False

    def _cut_off(self, message: str) -> None:
        """A client kept sending while refused: stop reading it, tell it why and close. (Waiting
        for its close reply, the server would read and discard what it sends, at its own rate:
        refused frames cut off that way still took a core for the close timeout.)"""
        self.server.refused("flooding")
        transport = self.client.request.transport
        if transport is not None:
            transport.pause_reading()
        self.client.fail(ProtocolError("flooding", message, fatal=True), linger=FLOOD_LINGER)

    def _relay_refused(self, error: ProtocolError | None) -> None:
        """Tell the client once per spell of refused frames (a stream of errors helps nobody)."""
        if error is not None and not self.relay_spell:
            self.client.fail(error)
        self.relay_spell = True

    async def on_text(self, text: str) -> None:
        now = self.clock()
        verdict = self.limiter.admit(now)
        if verdict == "ok" and not self.server.sources.admit_message(self.client.source, now):
            verdict = self.limiter.strike()  # the address's share, over all its connections
            self.server.metrics.rate_limited.labels("source_messages").inc()
        elif verdict != "ok":
            self.server.metrics.rate_limited.labels("connection_messages").inc()
        if verdict == "flood":
            self._cut_off("Too many messages while rate limited; disconnecting.")
            return
        if verdict != "ok":
            if verdict == "limited":
                rate = f"{self.config.rate:g}"
                message = f"Too many messages: at most {rate} per second; this one was dropped."
                self.client.fail(ProtocolError("rate_limited", message))
            return
        if len(text) > self.config.max_message or len(text.encode()) > self.config.max_message:
            limit = self.config.max_message
            self.client.fail(ProtocolError("too_large", f"Messages are limited to {limit} bytes."))
            return
        try:
            request = protocol.parse_message(text)
        except ProtocolError as exc:
            if self.client.key and exc.request == "hello":  # even a malformed second hello
                exc = ProtocolError("already_welcomed", "You have already said hello.")
            elif self.client.key is None and exc.request != "hello":  # PROTOCOL.md: hello first
                exc = ProtocolError("hello_required", HELLO_FIRST, request=exc.request)
            self.client.fail(exc)
            return
        try:
            await self.dispatch(request)
        except (ProtocolError, RoomError) as exc:
            kind = protocol.kind_of(request)
            if kind in ("join", "hello"):
                self.server.refused(exc.code)
                note("refused", self.client, "refused %s: %s", kind, exc.code, request=kind, reason=exc.code)
            self.client.fail(exc, request=kind)

    async def dispatch(self, request: protocol.Request) -> None:
        key = self.client.key
        if self.server.restarting and isinstance(request, protocol.Hello | protocol.Join):
            self.server.refused("server_restarting")
            tell_restarting(self.client)  # as a new connection is told: reconnect in a moment
            return
        if key is None:
            if not isinstance(request, protocol.Hello):
                raise ProtocolError("hello_required", HELLO_FIRST)
            self.welcome(request)
            return
        lobby = self.server.lobby
        if type(request) in ROSTER_CHANGES and not self.server.sources.admit_roster_change(
            self.client.source, self.clock()
        ):
            self.server.metrics.rate_limited.labels("roster_changes").inc()
            rate = f"{self.config.sources.roster_rate:g}"
            raise ProtocolError(
                "rate_limited", f"Your address changes rooms and rosters more than {rate} times a second."
            )
        match request:
            case protocol.Hello():
                raise ProtocolError("already_welcomed", "You have already said hello.")
            case protocol.Join():
                await self.join(key, request)
            case protocol.Leave():
                room = lobby.room_of(key)
                self.server.deliver(lobby.leave(key, now=self.clock()))
                self.server.forget_closed_rooms()
                if room is not None:
                    note("leave", self.client, "left room %r", room.name, room=room.name)
            case protocol.Kick(target):
                self.server.deliver(lobby.kick(key, target, now=self.clock()))
                self.server.forget_closed_rooms()
                note("kick", self.client, "kicked %s", target[:12], target=target)
            case protocol.Ready(ready):
                self.server.deliver(lobby.set_ready(key, ready))
            case protocol.Signal(to, data):
                if self.pass_on(lobby.relay(key, to, data)):
                    raise ProtocolError("rate_limited", RECIPIENT_BEHIND.format("signal"))
            case protocol.Chat(text):
                self.pass_on(lobby.chat(key, text))

    def pass_on(self, deliveries: list[Deliver]) -> int:
        """A signal or chat (one message for each recipient): charge the source's relay bytes for
        what is queued, the encoded message once per recipient, or refuse; then queue it where
        there is room for it. Returns how many recipients were behind and missed it."""
        message = deliveries[0].message
        text = encode(message)
        size = wire_size(text) * len(deliveries)
        if not self.server.sources.admit_relay(self.client.source, size, self.clock()):
            self.server.metrics.rate_limited.labels("relay_bytes").inc()
            rate = self.config.sources.relay_rate
            raise ProtocolError("rate_limited", f"Your address relays more than {rate:g} bytes a second.")
        self.server.metrics.relay_bytes.inc(size)
        dropped = self.server.deliver(deliveries, relayed=True, encoded={id(message): text})
        if dropped:
            self.server.metrics.rate_limited.labels("recipient_behind").inc(dropped)
        return dropped

    def welcome(self, hello: protocol.Hello) -> None:
        protocol.verify_hello(hello, self.nonce)
        previous = self.server.clients.get(hello.key)
        if previous is not None:
            # The new connection has just proven the key: it wins (a reconnect after a drop).
            self.server.deliver(self.server.lobby.disconnect(hello.key, now=self.clock()))
            message = "The same key said hello on another connection."
            previous.fail(ProtocolError("replaced", message, fatal=True))
            self.server.unwelcomed(previous.source)  # its _forget no longer finds it in clients
        self.client.key, self.client.name = hello.key, hello.name
        self.server.clients[hello.key] = self.client
        self.server.welcomed(self.client.source)
        note("welcome", self.client, "welcome")
        self.client.send_json(
            {
                "type": "welcome",
                "version": protocol.PROTOCOL_VERSION,
                "key": hello.key,
                "server": SERVER_NAME,
                "limits": self.config.limits_json(),
                # STUN only: TURN credentials go to the members of a room, in `joined`.
                "ice_servers": self._ice_servers(turn=False),
                "hosted_by": self.config.hosted_by,
                "relay": self.config.relay.to_json(),
            }
        )

    async def join(self, key: str, join: protocol.Join) -> None:
        if self.server.catalogue.get(join.game) is None:
            raise RoomError("unknown_game", f"This server has no game called {join.game!r}.")
        lobby = self.server.lobby
        self.server.expire_reservations()  # (a name whose time is up is free to take)
        if self.config.hide_private_rooms and join.room is not None and not lobby.was_member(join.room, key):
            self.named_lookup(join.room)
        plan = lobby.plan_join(key, join.game, join.room, join.password)
        check = PasswordCheck()
        if join.password is not None and (plan.verify_against is not None or plan.hash_new_password):
            guessed = plan.room if plan.verify_against is not None else None
            check = await self.check_password(plan.verify_against, join.password, guessed)
        if self.client.closing:
            return
        source = self.client.source
        args = (key, self.client.name, join.game, join.room, join.capacity, check, join.standby, source)
        deliveries = lobby.join(*args, now=self.clock())
        deliveries[0].message["ice_servers"] = self._member_ice_servers(charge=True)
        self.server.deliver(deliveries)
        self.server.forget_closed_rooms()  # (joining another room left the one we were in)
        room = str(deliveries[0].message["room"])
        self.server.metrics.joins.inc()
        note("join", self.client, "joined room %r of %s", room, join.game, room=room, game=join.game)

    def named_lookup(self, name: str) -> None:
        """With `--hide-private-rooms`, a join naming a room the key was never a member of tells
        whether a hidden room exists (`password_required`; a reserved one `room_reserved`): it
        is charged to the address's and network's budget of `GET /api/rooms/NAME`, or refused
        `try_later`. Issue 29 round three: such joins found all 8 hidden rooms among 301 names
        in 30.7 s. (Without the option every open room is listed on the status page anyway.)"""
        wait = self.server.access.room_lookup(self.client.source, self.clock())
        if wait is not None:
            self.server.metrics.rate_limited.labels("room_lookups").inc()
            message = f"Your address has looked for many rooms; try {name!r} again in {wait:.0f} s."
            raise RoomError("try_later", message, retry_after=wait)

    def room_guess(self, name: str, key: str) -> None:
        """Charge one password check to the room's budget, or refuse it with `try_later` before
        it costs the hasher anything; a key that was a member of the room (of the open room, or
        one its reservation admits) goes ahead."""
        past_member = self.server.lobby.was_member(name, key)
        wait = self.server.access.guess(name, past_member, self.clock())
        if wait is not None:
            self.server.metrics.rate_limited.labels("room_guesses").inc()
            message = f"Room {name!r} has had many password guesses; try again in {wait:.0f} s."
            raise RoomError("try_later", message, retry_after=wait)

    def _ice_servers(self, *, turn: bool) -> list[dict[str, object]]:
        key = self.client.key or ""
        return self.server.ice.servers_for(self.client.request.host, key, time.time(), turn=turn)

    def _member_ice_servers(self, *, charge: bool) -> list[dict[str, object]]:
        """STUN, and TURN credentials for a member if its address has not had its share; then
        the next ones are due in `renew_every` seconds (or a minute, after a refusal)."""
        ice = self.server.ice
        if self.renewal is not None:
            self.renewal.cancel()
            self.renewal = None
        if not ice.offers_turn:
            return self._ice_servers(turn=False)
        granted = not charge or self.server.access.turn_credentials(self.client.source, self.clock())
        if not granted:
            self.server.metrics.rate_limited.labels("turn_credentials").inc()
        delay = ice.renew_every if granted else min(TURN_RETRY, ice.renew_every)
        self.renewal = asyncio.get_running_loop().call_later(delay, self._renew, not granted)
        return self._ice_servers(turn=granted)

    def _renew(self, charge: bool) -> None:
        """New TURN credentials for a member, before its others expire; none once it is not one."""
        self.renewal = None
        key, client = self.client.key, self.client
        if key is None or client.closing or self.server.clients.get(key) is not client:
            return
        room = self.server.lobby.room_of(key)
        if room is None:  # left, kicked: what it has expires, and nothing follows
            return
        servers = self._member_ice_servers(charge=charge)
        client.send_json({"type": "ice_servers", "room": room.name, "ice_servers": servers})

    async def check_password(
        self, stored: bytes | None, password: str, room: str | None = None
    ) -> PasswordCheck:
        """Verify against `stored` (the hash of ROOM, when it is a guess at one), or hash a new
        room's password: within the source's share of checks in flight and per minute, then the
        room's guess budget (`room_guess`: an address refused its own share does not spend the
        room's), then the server's bounded queue."""
        source = self.client.source
        refusal = self.server.sources.begin_password_check(source, self.clock())
        if refusal == "busy":
            raise RoomError("busy", "Your address has password checks running; wait for them.")
        if refusal is not None:
            self.server.metrics.rate_limited.labels("password_checks").inc()
            raise RoomError("rate_limited", "Your address has tried too many passwords; wait a minute.")
        try:
            if room is not None and self.client.key is not None:
                self.room_guess(room, self.client.key)
            if stored is not None:
                return PasswordCheck(stored, await self.server.hasher.verify(stored, password))
            return PasswordCheck(new_hash=await self.server.hasher.hash(password))
        finally:
            self.server.sources.end_password_check(source)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    config = server.config
    ws = web.WebSocketResponse(
        heartbeat=config.heartbeat,
        max_msg_size=config.max_message * 4,  # above 64 KiB we answer too_large; far above, 1009
        timeout=config.close_timeout,
    )
    await ws.prepare(request)
    source = server.source_of(request)
    now = asyncio.get_running_loop().time()
    refusal = _refusal(server, source)
    if refusal is not None or not server.sources.open(source, now):
        code, message, close = refusal or (
            "too_many_connections",
            f"Your address has {config.sources.connections} connections open already.",
            WSCloseCode.TRY_AGAIN_LATER,
        )
        server.refused(code)
        if server.sampled(source, f"refused {code}"):
            log.info(
                "refused a connection from %s: %s",
                source,
                code,
                extra={"event": {"event": "refused", "source": source, "reason": code}},
            )
        await ws.send_json(protocol.error_message(code, message, fatal=True))
        await ws.close(code=close)
        return ws
    server.sockets.add(ws)
    backlog = SendBacklog(config.send_queue_bytes, config.send_share, config.slow_grace)
    queue: asyncio.Queue[Outgoing | object] = asyncio.Queue(config.send_queue)
    client = Client(ws, request, queue, backlog, source, config.close_timeout)
    client.on_written = server.metrics.message_latency.observe
    client.on_evicted = lambda: _forget(server, client)
    try:
        await _serve(server, client)
    finally:
        server.socket_ended(ws)
        server.sources.close(source, asyncio.get_running_loop().time())
        _forget(server, client)
    return ws


def _refusal(server: Server, source: str) -> tuple[str, str, int] | None:
    if server.restarting:
        return "server_restarting", RESTARTING, WSCloseCode.SERVICE_RESTART
    if len(server.sockets) >= server.config.max_clients:
        return "server_full", "The server is full; try later.", WSCloseCode.TRY_AGAIN_LATER
    return None


async def _serve(server: Server, client: Client) -> None:
    async with asyncio.TaskGroup() as group:
        writer = group.create_task(client.write_loop())
        try:
            await ClientReader(server, client).run()
        finally:
            _forget(server, client)
            client.close(WSCloseCode.OK)  # no-op if a fatal error already asked to close
            done, _ = await asyncio.wait({writer}, timeout=server.config.close_timeout)
            if not done:  # stuck writing to a peer that does not read: cut it off
                client.abort()
                writer.cancel()


def _forget(server: Server, client: Client) -> None:
    """The connection is over: leave its room and free its key (unless another took it over)."""
    if client.key is not None and server.clients.get(client.key) is client:
        del server.clients[client.key]
        server.unwelcomed(client.source)
        room = server.lobby.room_of(client.key)
        server.deliver(server.lobby.disconnect(client.key, now=asyncio.get_running_loop().time()))
        server.relay.forget_client(client.key)
        server.forget_closed_rooms()
        fields = {"room": room.name} if room is not None else {}
        note("bye", client, "disconnected%s", f" from room {room.name!r}" if room else "", **fields)
