"""Shared state of one rendezvous application: its configuration, lobby and password hasher.

Owns `Config` (every tunable, defaults documented in PROTOCOL.md), the argon2id `Hasher` (a
small dedicated thread pool with a bounded waiting line, because hashing is a DoS vector), and
`Server`, stored in the application under the typed key `SERVER`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import nacl.exceptions
import nacl.pwhash
from aiohttp import web

from games.catalogue import Catalogue
from rendezvous import protocol, wire
from rendezvous.access import Access, AccessLimits
from rendezvous.connection import Client, encode
from rendezvous.fairness import SourceLimits, Sources
from rendezvous.ice import IceConfig
from rendezvous.logs import LogSampler
from rendezvous.metrics import Metrics
from rendezvous.relay import RelayLedger, RelayLimits
from rendezvous.rooms import Deliver, Lobby, RoomError
from rendezvous.rosters import INTERVAL, RosterPacer
from rendezvous.stun import StunResponder

T = TypeVar("T")
MEMBERSHIP = frozenset({"joined", "member_joined", "left", "member_left", "kicked", "member_kicked"})
VERSION = "0.1.0"
SERVER_NAME = f"msxsync-rendezvous {VERSION}"
log = logging.getLogger("msxsync.rendezvous")

# argon2id cost for room passwords: room passwords guard a lobby, not an account, and every
# hash is a CPU+memory cost an attacker can make us pay, so keep it modest and bounded.
PWHASH_OPSLIMIT = 2
PWHASH_MEMLIMIT = 16 * 1024 * 1024


PROXY_HEADERS = ("x-forwarded-for", "forwarded")


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
    send_queue_bytes: int = 1024 * 1024  # a client with more than this waiting is cut off at once
    send_share: int = 256 * 1024  # ... and one with more than this waiting for `slow_grace` s
    slow_grace: float = 10.0
    close_timeout: float = 5.0
    hash_concurrency: int = 2
    hash_waiting: int = 16
    sources: SourceLimits = field(default_factory=SourceLimits)  # what one address may hold
    trusted_proxies: frozenset[str] = frozenset()  # whose forwarding header names the source
    proxy_header: str = "x-forwarded-for"  # ... X-Forwarded-For, or RFC 7239 "forwarded"
    hide_private_rooms: bool = False  # the status page leaves passworded rooms out
    keepalive_timeout: float = 15.0  # HTTP: idle (or never-finished) connections close after this
    max_http_connections: int = 4096  # open HTTP connections (WebSockets included), all sources
    http_per_source: int = 64  # ... and from one address (a trusted proxy is exempt)
    tls_handshake_timeout: float = 5.0  # seconds from the TCP accept to a finished TLS handshake
    log_window: float = 60.0  # per-source log lines: a line of each kind, then a summary a window
    ice: IceConfig = field(default_factory=IceConfig)  # STUN in the welcome, TURN to room members
    access: AccessLimits = field(default_factory=AccessLimits)  # TURN, room guesses, room look-ups
    # The key (64 hex digits) of the player whose program runs this rendezvous (LAN play, a
    # takeover), None for a standalone server: players never replace a standalone one (issue 17).
    hosted_by: str | None = None
    relay: RelayLimits = field(default_factory=RelayLimits)  # the relay of last resort
    # An emptied room's name stays reserved for its past members this long (issue 29, F4): far
    # longer than a client's rejoin window (peer.mesh.signalling retries every 3 s at most).
    reservation_hold: float = 300.0
    max_reservations: int = 4096  # reserved names in all (the oldest goes first beyond)
    state_dir: Path | None = None  # reserved names are kept here across a restart (None: not kept)
    roster_interval: float = INTERVAL  # a room's roster changes this close together go out as one

    def __post_init__(self) -> None:
        if self.hosted_by is not None and not wire.is_key(self.hosted_by):
            raise ValueError("hosted_by must be a key: 64 lower-case hex digits")
        counts = ("max_clients", "max_rooms", "max_message", "burst", "send_queue", "send_queue_bytes")
        for name in (*counts, "hash_concurrency", "send_share", "max_http_connections", "http_per_source"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.room_capacity < 2:
            raise ValueError("room_capacity must be at least 2")
        if self.max_reservations < 1:
            raise ValueError("max_reservations must be at least 1")
        if not self.reservation_hold >= 0:
            raise ValueError("reservation_hold must not be negative")
        if self.hash_waiting < 0:
            raise ValueError("hash_waiting must not be negative")
        if self.roster_interval < 0:
            raise ValueError("roster_interval must not be negative")
        if self.send_share > self.send_queue_bytes:
            raise ValueError("send_share must not exceed send_queue_bytes")
        if self.proxy_header not in PROXY_HEADERS:
            raise ValueError(f"proxy_header must be one of {', '.join(PROXY_HEADERS)}")
        positive = ("hello_timeout", "heartbeat", "rate", "close_timeout", "slow_grace", "keepalive_timeout")
        for name in (*positive, "tls_handshake_timeout", "log_window"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")

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
        self.concurrency = concurrency
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

    @property
    def in_flight(self) -> int:
        return self.queued

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
    roms: dict[str, bytes] = field(default_factory=dict)  # verified ROM bytes, read on demand
    sources: Sources = field(default_factory=Sources)
    refusals: Counter[str] = field(default_factory=Counter)  # by reason, since start
    restarting: bool = False  # SIGTERM came: clients are being told to reconnect
    metrics: Metrics = field(init=False)
    _sockets_changed: asyncio.Event = field(default_factory=asyncio.Event)
    ice: IceConfig = field(default_factory=IceConfig)  # the config's, with the STUN port once bound
    stun: StunResponder | None = None  # set while the STUN server runs (its counters)
    relay: RelayLedger = field(init=False)
    access: Access = field(init=False)
    # Addresses that hold a welcomed WebSocket, with how many: STUN keeps a share for them.
    welcomed_sources: Counter[str] = field(default_factory=Counter)
    log_sampler: LogSampler = field(init=False)
    rosters: RosterPacer = field(init=False)
    _roster_timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        self.ice = self.config.ice
        self.access = Access(replace(self.config.access, network_share=self.config.sources.network_share))
        self.sources = Sources(self.config.sources)
        share = self.config.sources.network_share
        window = self.config.log_window
        self.log_sampler = LogSampler(window=window, network_share=share, now=time.monotonic())
        self.relay = RelayLedger(self.config.relay)
        self.rosters = RosterPacer(self.config.roster_interval)
        self.metrics = Metrics(self.gauges, self.counters)

    def gauges(self) -> dict[str, int]:
        return {
            "connections": len(self.sockets),
            "players": len(self.clients),
            "rooms": self.lobby.room_count,
            "games": len(self.catalogue.entries),
            "sources": len(self.sources),
            "reserved_rooms": len(self.lobby.reservations),
        }

    def counters(self) -> dict[str, int]:
        """Counters kept by others, for the metrics: STUN requests answered and dropped."""
        stun = self.stun_statistics() or {}
        relay = {f"relay_{name}": value for name, value in self.relay.statistics().items()}
        rosters = {"rosters_sent": self.rosters.sent, "rosters_folded": self.rosters.folded}
        stun_counts = {f"stun_{name}": value for name, value in stun.items() if isinstance(value, int)}
        return {**stun_counts, **relay, **rosters, **self.access.statistics()}

    def statistics(self) -> dict[str, int]:
        """Every counter the server reports, in one place (health check and status page)."""
        return {
            **self.gauges(),
            "refusals": sum(self.refusals.values()),
            "uptime_s": int(time.monotonic() - self.started),
        }

    async def wait_no_sockets(self) -> None:
        """Until every WebSocket has ended (`socket_ended` is told of each)."""
        while self.sockets:
            self._sockets_changed.clear()
            await self._sockets_changed.wait()

    def socket_ended(self, ws: web.WebSocketResponse) -> None:
        self.sockets.discard(ws)
        self._sockets_changed.set()

    def welcomed(self, source: str) -> None:
        self.welcomed_sources[source] += 1

    def unwelcomed(self, source: str) -> None:
        self.welcomed_sources[source] -= 1
        if self.welcomed_sources[source] <= 0:
            del self.welcomed_sources[source]

    def holds_welcomed(self, source: str) -> bool:
        """Whether `source` holds a welcomed WebSocket (STUN keeps a share of answers for it)."""
        return source in self.welcomed_sources

    def source_of(self, request: web.BaseRequest) -> str:
        """The address REQUEST is charged to: the one place every handler asks (the peer, or the
        hop the configured proxies forwarded in `config.proxy_header`: see `source_of`)."""
        return source_of(request, self.config.trusted_proxies, self.config.proxy_header)

    def sampled(self, source: str, kind: str, *, event: bool = False) -> bool:
        """Whether to write a log line of `kind` about `source` (`rendezvous.logs.LogSampler`);
        `event`: about what a welcomed player did in a room."""
        return self.log_sampler.admit(source, kind, time.monotonic(), event=event)

    def refused(self, reason: str) -> None:
        """Count one refusal (a join, a connection, a message) under its protocol error code."""
        self.refusals[reason] += 1
        self.metrics.refusals.labels(reason).inc()

    def stun_statistics(self) -> dict[str, int] | None:
        return None if self.stun is None else self.stun.statistics()

    def forget_closed_rooms(self) -> None:
        """After a member left a room (by leaving, a kick, joining another, disconnecting)."""
        self.relay.forget_rooms(self.lobby.room_names())
        self.expire_reservations()

    def expire_reservations(self) -> None:
        """Stamp the names reserved since the last call, and free those whose time is up."""
        self.lobby.reservations.expire(asyncio.get_running_loop().time())
        self.rosters.forget_rooms(self.lobby.room_names())

    def deliver(
        self, deliveries: list[Deliver], *, relayed: bool = False, encoded: dict[int, str] | None = None
    ) -> int:
        """Hand each message to its connection; rosters go out as `rendezvous.rosters` paces
        them. `relayed`: another member's signal or chat, dropped for a recipient whose relay
        share is full; returns how many were. `encoded`: messages already encoded, by `id`."""
        rooms = {str(d.message["room"]): None for d in deliveries if d.message.get("type") == "roster"}
        dropped = self._send([d for d in deliveries if d.message.get("type") != "roster"], relayed, encoded)
        if rooms:
            now = asyncio.get_running_loop().time()
            at_once = any(d.message.get("type") in MEMBERSHIP for d in deliveries)
            for room in rooms:
                if self.rosters.changed(room, now, at_once=at_once):
                    self._send(self.lobby.roster(room))
            self._arm_roster_timer()
        return dropped

    def _send(
        self, deliveries: list[Deliver], relayed: bool = False, encoded: dict[int, str] | None = None
    ) -> int:
        encoded = {} if encoded is None else encoded  # a message to many members: encoded once
        dropped = 0
        for item in deliveries:
            client = self.clients.get(item.to)
            if client is None:
                continue
            text = encoded.get(id(item.message))
            if text is None:
                text = encoded[id(item.message)] = encode(item.message)
            if not client.send(text, relayed=relayed) and relayed:
                dropped += 1
        return dropped

    def _arm_roster_timer(self) -> None:
        when = self.rosters.get_timer()
        timer = self._roster_timer
        if when is None or (timer is not None and not timer.cancelled() and timer.when() <= when):
            return
        if timer is not None:
            timer.cancel()
        self._roster_timer = asyncio.get_running_loop().call_at(when, self._send_waiting_rosters, when)

    def _send_waiting_rosters(self, when: float) -> None:
        self._roster_timer = None
        # (`when` at the latest: the loop may run a timer a clock tick before its time)
        for room in self.rosters.due(max(when, asyncio.get_running_loop().time())):
            self._send(self.lobby.roster(room))
        self._arm_roster_timer()


def source_of(request: web.BaseRequest, trusted: frozenset[str], header: str = "x-forwarded-for") -> str:
    """The address a request comes from: the peer's, unless the peer is a proxy the operator
    named; then the nearest hop in `header` (X-Forwarded-For, or RFC 7239 Forwarded's `for=`)
    that is not one of those proxies. A hop is read as an address with or without its port
    (`ADDR`, `ADDR:PORT`, `[V6]`, `[V6]:PORT`); a hop that is none of these (`unknown`, an
    obfuscated name) leaves the request charged to the proxy."""
    peer = request.remote or "unknown"
    if peer not in trusted:
        return peer
    if header == "forwarded":
        hops = [str(element.get("for", "")) for element in request.forwarded]
    else:
        hops = [hop.strip() for hop in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed(hops):
        if not hop.strip():
            continue
        address = hop_address(hop)
        if address is None:
            return peer  # a proxy we trust wrote something that is not an address
        if address not in trusted:
            return address
    return peer


def hop_address(hop: str) -> str | None:
    """The address of one forwarded hop, without its port, in its canonical spelling; None
    when the hop names no address."""
    hop = hop.strip().strip('"')
    if hop.startswith("["):  # [V6] or [V6]:PORT
        hop, _, rest = hop[1:].partition("]")
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
    elif hop.count(":") == 1:  # V4:PORT (a bare V6 has two colons or more)
        hop, _, port = hop.partition(":")
        if not port.isdigit():
            return None
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return None


SERVER = web.AppKey("server", Server)
