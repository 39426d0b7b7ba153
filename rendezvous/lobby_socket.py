"""The `/ws` endpoint: one WebSocket connection of the lobby and signalling protocol.

Owns the per-connection adapter around the pure `rendezvous.protocol` and `rendezvous.rooms`:
reading frames, the hello deadline and the rate limit. Per connection, the handler reads (this
coroutine) and one writer task drains the `rendezvous.connection.Client` queue; both live in one
TaskGroup.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from aiohttp import WSCloseCode, WSMsgType, web

from rendezvous import protocol
from rendezvous.connection import Client
from rendezvous.protocol import ProtocolError, RateLimiter
from rendezvous.rooms import PasswordCheck, RoomError
from rendezvous.state import SERVER, SERVER_NAME, Server, log


class Session:
    """Reads one client's frames and turns them into lobby operations."""

    def __init__(self, server: Server, client: Client) -> None:
        self.server = server
        self.client = client
        self.config = server.config
        loop = asyncio.get_running_loop()
        self.clock = loop.time
        self.limiter = RateLimiter(self.config.rate, self.config.burst, self.clock())
        self.nonce = secrets.token_bytes(protocol.NONCE_SIZE)

    async def run(self) -> None:
        ws = self.client.ws
        self.client.send_json(protocol.challenge_message(self.nonce))
        deadline = self.clock() + self.config.hello_timeout
        while not self.client.closing:
            timeout = None if self.client.key else max(0.001, deadline - self.clock())
            try:
                msg = await ws.receive(timeout=timeout)
            except TimeoutError:
                self.client.fail(ProtocolError("hello_timeout", "No valid hello came in time."), fatal=True)
                return
            if msg.type == WSMsgType.TEXT:
                await self.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                binary = ProtocolError("binary_not_supported", "Send JSON in text frames only.")
                self.client.fail(binary)
            else:  # CLOSE, CLOSING, CLOSED, ERROR (e.g. far too large a frame)
                return

    async def on_text(self, text: str) -> None:
        verdict = self.limiter.admit(self.clock())
        if verdict == "flood":
            message = "Too many messages while rate limited; disconnecting."
            self.client.fail(ProtocolError("flooding", message, fatal=True))
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
            self.client.fail(exc)
            return
        try:
            await self.dispatch(request)
        except (ProtocolError, RoomError) as exc:
            self.client.fail(exc, request=protocol.kind_of(request))

    async def dispatch(self, request: protocol.Request) -> None:
        key = self.client.key
        if key is None:
            if not isinstance(request, protocol.Hello):
                raise ProtocolError("hello_required", "Say hello (answer the challenge) first.")
            self.welcome(request)
            return
        lobby = self.server.lobby
        match request:
            case protocol.Hello():
                raise ProtocolError("already_welcomed", "You have already said hello.")
            case protocol.Join():
                await self.join(key, request)
            case protocol.Leave():
                self.server.deliver(lobby.leave(key))
            case protocol.Kick(target):
                self.server.deliver(lobby.kick(key, target))
            case protocol.Ready(ready):
                self.server.deliver(lobby.set_ready(key, ready))
            case protocol.Signal(to, data):
                self.server.deliver(lobby.relay(key, to, data))
            case protocol.Chat(text):
                self.server.deliver(lobby.chat(key, text))

    def welcome(self, hello: protocol.Hello) -> None:
        protocol.verify_hello(hello, self.nonce)
        previous = self.server.clients.get(hello.key)
        if previous is not None:
            # The new connection has just proven the key: it wins (a reconnect after a drop).
            self.server.deliver(self.server.lobby.disconnect(hello.key))
            message = "The same key said hello on another connection."
            previous.fail(ProtocolError("replaced", message, fatal=True))
        self.client.key, self.client.name = hello.key, hello.name
        self.server.clients[hello.key] = self.client
        log.info("welcome %s", self.client.label)
        self.client.send_json(
            {
                "type": "welcome",
                "version": protocol.PROTOCOL_VERSION,
                "key": hello.key,
                "server": SERVER_NAME,
                "limits": self.config.limits_json(),
                # Fresh TURN credentials on every welcome: a reconnect renews them.
                "ice_servers": self.server.ice.servers_for(self.client.request.host, hello.key, time.time()),
                "hosted_by": self.config.hosted_by,
            }
        )

    async def join(self, key: str, join: protocol.Join) -> None:
        if self.server.catalogue.get(join.game) is None:
            raise RoomError("unknown_game", f"This server has no game called {join.game!r}.")
        lobby = self.server.lobby
        plan = lobby.plan_join(key, join.game, join.room, join.password)
        check = PasswordCheck()
        hasher = self.server.hasher
        if join.password is not None:
            if plan.verify_against is not None:
                matches = await hasher.verify(plan.verify_against, join.password)
                check = PasswordCheck(plan.verify_against, matches)
            elif plan.hash_new_password:
                check = PasswordCheck(new_hash=await hasher.hash(join.password))
        if self.client.closing:
            return
        self.server.deliver(
            lobby.join(key, self.client.name, join.game, join.room, join.capacity, check, join.standby)
        )


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    config = server.config
    ws = web.WebSocketResponse(
        heartbeat=config.heartbeat,
        max_msg_size=config.max_message * 4,  # above 64 KiB we answer too_large; far above, 1009
        timeout=config.close_timeout,
    )
    await ws.prepare(request)
    if len(server.sockets) >= config.max_clients:
        full = protocol.error_message("server_full", "The server is full; try later.", fatal=True)
        await ws.send_json(full)
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER)
        return ws
    server.sockets.add(ws)
    client = Client(ws, request, asyncio.Queue(config.send_queue))
    try:
        await _serve(server, client)
    finally:
        server.sockets.discard(ws)
        _forget(server, client)
    return ws


async def _serve(server: Server, client: Client) -> None:
    async with asyncio.TaskGroup() as group:
        writer = group.create_task(client.write_loop())
        try:
            await Session(server, client).run()
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
        server.deliver(server.lobby.disconnect(client.key))
        log.info("bye %s", client.label)
