"""The rendezvous aiohttp application: HTTP catalogue, status page and the `/ws` lobby.

This is the adapter around the pure `rendezvous.rooms` and `rendezvous.protocol`: it owns the
sockets, the per-client send queues, the clock, the password hashing threads and the catalogue
loaded from disk. `create_app(config)` builds a self-contained `web.Application`, so the same
server runs from the command line or inside a peer (LAN hosting).

Per connection, the handler runs a reader (this coroutine) and one writer task that drains a
bounded queue; both live in one TaskGroup. A client whose queue overflows (it stopped reading) is
cut off with `transport.abort()`, never buffered without bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import nacl.exceptions
import nacl.pwhash
from aiohttp import WSCloseCode, WSMsgType, web

from games.catalogue import Catalogue, CatalogueEntry, bundled_games_dir, load_catalogue
from games.definition import is_valid_game_name
from rendezvous import protocol
from rendezvous.protocol import ProtocolError, RateLimiter
from rendezvous.rooms import Deliver, Lobby, LobbyLimits, PasswordCheck, RoomError

T = TypeVar("T")
VERSION = "0.1.0"
SERVER_NAME = f"msxsync-rendezvous {VERSION}"
log = logging.getLogger("msxsync.rendezvous")

# argon2id cost for room passwords: room passwords guard a lobby, not an account, and every
# hash is a CPU+memory cost an attacker can make us pay, so keep it modest and bounded.
PWHASH_OPSLIMIT = 2
PWHASH_MEMLIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class Config:
    """Everything tunable; defaults are the production values documented in PROTOCOL.md."""

    games: list[Path] | None = None  # None: the games bundled with msxsync
    catalogue: Catalogue | None = None  # a ready catalogue wins over `games` (tests, embedding)
    max_clients: int = 2000
    max_rooms: int = 1000
    room_capacity: int = 8
    max_message: int = 64 * 1024
    hello_timeout: float = 10.0
    heartbeat: float = 15.0
    rate: float = 20.0
    burst: int = 60
    send_queue: int = 256
    close_timeout: float = 5.0
    hash_concurrency: int = 2
    hash_waiting: int = 16

    def limits_json(self) -> dict[str, object]:
        return {
            "max_message": self.max_message,
            "room_capacity": self.room_capacity,
            "chat_length": protocol.CHAT_LIMIT,
            "heartbeat": self.heartbeat,
            "rate": self.rate,
            "burst": self.burst,
        }


class Hasher:
    """argon2id hashing on a small dedicated thread pool, with a bounded waiting line."""

    def __init__(self, concurrency: int, waiting: int) -> None:
        self.executor = ThreadPoolExecutor(concurrency, thread_name_prefix="pwhash")
        self.slots = asyncio.Semaphore(concurrency)
        self.waiting = waiting
        self.queued = 0

    async def _run(self, fn: Callable[..., T], *args: bytes) -> T:
        if self.queued >= self.waiting:
            raise RoomError("busy", "Too many password checks are waiting; try again shortly.")
        self.queued += 1
        try:
            async with self.slots:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self.executor, fn, *args)
        finally:
            self.queued -= 1

    async def hash(self, password: str) -> bytes:
        return await self._run(_argon2id_str, password.encode())

    async def verify(self, stored: bytes, password: str) -> bool:
        return await self._run(_argon2id_verify, stored, password.encode())

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def _argon2id_str(password: bytes) -> bytes:
    return nacl.pwhash.argon2id.str(password, opslimit=PWHASH_OPSLIMIT, memlimit=PWHASH_MEMLIMIT)


def _argon2id_verify(stored: bytes, password: bytes) -> bool:
    try:
        return nacl.pwhash.argon2id.verify(stored, password)
    except nacl.exceptions.InvalidkeyError:
        return False


# --- per-connection adapter ---------------------------------------------------------------

_CLOSE = object()  # queue sentinel: close the socket after what is queued before it


@dataclass(eq=False)
class Client:
    """One WebSocket: its bounded outgoing queue and, after hello, its identity."""

    ws: web.WebSocketResponse
    request: web.Request
    queue: asyncio.Queue[str | object]
    key: str | None = None
    name: str = ""
    closing: bool = False
    close_code: int = WSCloseCode.POLICY_VIOLATION

    def send(self, text: str) -> None:
        if self.closing:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.info("dropping %s: it does not read its messages", self.label)
            self.abort()

    def send_json(self, message: dict[str, object]) -> None:
        self.send(json.dumps(message))

    def fail(self, error: ProtocolError | RoomError, *, fatal: bool = False) -> None:
        request = error.request if isinstance(error, ProtocolError) else None
        fatal = fatal or (isinstance(error, ProtocolError) and error.fatal)
        self.send_json(
            protocol.error_message(error.code, error.message, fatal=fatal, request=request)
        )
        if fatal:
            self.close()

    def close(self, code: int = WSCloseCode.POLICY_VIOLATION) -> None:
        """Close after the queued messages went out (the fatal error among them)."""
        if self.closing:
            return
        self.close_code = code
        try:
            self.queue.put_nowait(_CLOSE)
        except asyncio.QueueFull:
            self.abort()
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    async def write_loop(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                if item is _CLOSE:
                    await self.ws.close(code=self.close_code)
                    return
                await self.ws.send_str(str(item))
            except (ConnectionError, RuntimeError):
                # The peer is gone or the socket already closed: nothing left to write to.
                return

    @property
    def label(self) -> str:
        who = f"{self.name!r} {self.key[:12]}" if self.key else "unidentified client"
        return f"{who} from {self.request.remote}"


@dataclass
class Server:
    """State shared by all handlers of one application."""

    config: Config
    catalogue: Catalogue
    lobby: Lobby
    hasher: Hasher
    started: float = field(default_factory=time.monotonic)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)
    clients: dict[str, Client] = field(default_factory=dict)

    def deliver(self, deliveries: list[Deliver]) -> None:
        encoded: dict[int, str] = {}  # a roster goes to many members: encode it once
        for item in deliveries:
            client = self.clients.get(item.to)
            if client is None:
                continue
            text = encoded.get(id(item.message))
            if text is None:
                text = encoded[id(item.message)] = json.dumps(item.message)
            client.send(text)


SERVER = web.AppKey("server", Server)


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
                self.client.fail(
                    ProtocolError("hello_timeout", "No valid hello came in time."), fatal=True
                )
                return
            if msg.type == WSMsgType.TEXT:
                await self.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                self.refuse(ProtocolError("binary_not_supported", "Send JSON in text frames only."))
            else:  # CLOSE, CLOSING, CLOSED, ERROR (e.g. far too large a frame)
                return

    def refuse(self, error: ProtocolError | RoomError) -> None:
        self.client.fail(error)

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
                self.refuse(ProtocolError("rate_limited", message))
            return
        if len(text) > self.config.max_message or len(text.encode()) > self.config.max_message:
            limit = self.config.max_message
            self.refuse(ProtocolError("too_large", f"Messages are limited to {limit} bytes."))
            return
        try:
            request = protocol.parse_message(text)
            await self.dispatch(request)
        except ProtocolError as exc:
            if self.client.key and exc.request == "hello":
                exc = ProtocolError("already_welcomed", "You have already said hello.")
            self.refuse(exc)
        except RoomError as exc:
            self.refuse(exc)

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
            lobby.join(key, self.client.name, join.game, join.room, join.capacity, check)
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
            if not done:
                client.abort()


def _forget(server: Server, client: Client) -> None:
    """The connection is over: leave its room and free its key (unless another took it over)."""
    if client.key is not None and server.clients.get(client.key) is client:
        del server.clients[client.key]
        server.deliver(server.lobby.disconnect(client.key))
        log.info("bye %s", client.label)


# --- HTTP ---------------------------------------------------------------------------------


def _json_error(status: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    body = json.dumps({"error": code, "message": message})
    return status(text=body, content_type="application/json")


def _entry(request: web.Request) -> CatalogueEntry:
    name = request.match_info["name"]
    if not is_valid_game_name(name):
        raise _json_error(web.HTTPBadRequest, "bad_name", "That is not a valid game name.")
    entry = request.app[SERVER].catalogue.get(name)
    if entry is None:
        raise _json_error(web.HTTPNotFound, "unknown_game", "This server has no such game.")
    return entry


def game_summary(entry: CatalogueEntry) -> dict[str, object]:
    definition = entry.definition
    rom = entry.rom
    return {
        "name": entry.name,
        "title": definition.title or entry.name,
        "machine": definition.machine,
        "romtype": definition.romtype,
        "rom": None if rom is None else {"size": rom.size, "sha1": rom.sha1, "sha256": rom.sha256},
        "rom_available": rom is not None,
        "known_roms": [{"sha1": k.sha1, "remark": k.remark} for k in definition.known_roms],
    }


async def healthz(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    body = {
        "status": "ok",
        "version": VERSION,
        "protocol": protocol.PROTOCOL_VERSION,
        "clients": len(server.sockets),
        "rooms": server.lobby.room_count,
    }
    return web.json_response(body)


async def list_games(request: web.Request) -> web.Response:
    entries = request.app[SERVER].catalogue.entries
    return web.json_response({"games": [game_summary(entries[n]) for n in sorted(entries)]})


async def game_detail(request: web.Request) -> web.Response:
    entry = _entry(request)
    return web.json_response({**game_summary(entry), "definition": entry.definition.to_json()})


async def game_rom(request: web.Request) -> web.Response:
    entry = _entry(request)
    rom = entry.rom
    if rom is None:
        raise _json_error(web.HTTPNotFound, "rom_absent", "This server does not have that ROM.")
    etag = f'"{rom.sha256}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    data = await asyncio.to_thread(_read_rom, rom.path, rom.sha256)
    if data is None:
        log.warning("%s changed on disk since start; not serving it", rom.path)
        raise _json_error(web.HTTPNotFound, "rom_absent", "The ROM changed on this server.")
    return web.Response(body=data, content_type="application/octet-stream", headers=headers)


def _read_rom(path: Path, sha256: str) -> bytes | None:
    """The ROM bytes, only if they are still the ones hashed at start (the ETag promises that)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


async def status_page(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    esc = html.escape
    uptime = int(time.monotonic() - server.started)
    games = "".join(
        f"<tr><td>{esc(e.name)}</td><td>{esc(e.definition.title or e.name)}</td>"
        f"<td>{'yes' if e.rom else 'no'}</td></tr>"
        for _, e in sorted(server.catalogue.entries.items())
    )
    rooms = "".join(
        f"<tr><td>{esc(r.name)}</td><td>{esc(r.game)}</td><td>{r.players}/{r.capacity}</td>"
        f"<td>{'yes' if r.password else 'no'}</td></tr>"
        for r in server.lobby.summaries()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>msxsync rendezvous</title></head><body>
<h1>msxsync rendezvous {esc(VERSION)}</h1>
<p>Protocol {protocol.PROTOCOL_VERSION}. Up {uptime // 3600}h {uptime // 60 % 60}m {uptime % 60}s.
{len(server.sockets)} connected, {server.lobby.room_count} rooms.</p>
<h2>Games</h2>
<table><tr><th>name</th><th>title</th><th>ROM here</th></tr>{games}</table>
<h2>Rooms</h2>
<table><tr><th>room</th><th>game</th><th>players</th><th>password</th></tr>{rooms}</table>
</body></html>
"""
    return web.Response(text=page, content_type="text/html")


# --- the application ----------------------------------------------------------------------


def load_games(config: Config) -> Catalogue:
    if config.catalogue is not None:
        return config.catalogue
    catalogue = load_catalogue(config.games if config.games else [bundled_games_dir()])
    for problem in catalogue.problems:
        log.warning("game definition skipped: %s", problem)
    log.info("serving %d games: %s", len(catalogue.entries), ", ".join(sorted(catalogue.entries)))
    return catalogue


async def _hashing_threads(app: web.Application) -> AsyncIterator[None]:
    """Shut the password-hashing threads down when the application stops."""
    yield
    app[SERVER].hasher.close()


async def _close_sockets(app: web.Application) -> None:
    sockets = list(app[SERVER].sockets)
    if sockets:
        log.info("closing %d websockets", len(sockets))
    message = b"server shutting down"
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=message) for ws in sockets),
        return_exceptions=True,
    )


def create_app(config: Config | None = None) -> web.Application:
    """A ready rendezvous application; run it with `web.run_app` or an `AppRunner`."""
    config = config or Config()
    limits = LobbyLimits(max_rooms=config.max_rooms, room_capacity=config.room_capacity)
    app = web.Application()
    hasher = Hasher(config.hash_concurrency, config.hash_waiting)
    app[SERVER] = Server(config, load_games(config), Lobby(limits), hasher)
    app.cleanup_ctx.append(_hashing_threads)
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/", status_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/games", list_games)
    app.router.add_get("/api/games/{name}", game_detail)
    app.router.add_get("/api/games/{name}/rom", game_rom)
    app.router.add_get("/ws", websocket_handler)
    return app
