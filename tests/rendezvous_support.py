"""Shared pieces of the rendezvous tests: a games folder, a server on a loopback socket, players.

Also the fixtures those tests share (registered for every test module by tests/conftest.py):
`games` (a folder from `make_games`), `base` (the URL of a server on it, default limits) and
`session` (an aiohttp client session).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nacl.signing import SigningKey

from rendezvous import listener, protocol
from rendezvous.app import Config, create_app
from rendezvous.cli import public_guard
from rendezvous.fairness import SourceLimits

ROM_BYTES = bytes(range(256)) * 64  # 16 KiB of fake ROM
ROM_SHA1 = hashlib.sha1(ROM_BYTES).hexdigest()
ROM_SHA256 = hashlib.sha256(ROM_BYTES).hexdigest()
WAIT = 5.0


def make_games(folder: Path) -> Path:
    """`demo` with its ROM, `norom` without one, and `broken` that does not parse."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo.rom").write_bytes(ROM_BYTES)
    (folder / "demo.regions").write_text(
        f"demo.rom\n#! title Demo Game\n#! machine C-BIOS_MSX1\n#! sha1 {ROM_SHA1} test dump\n"
        "#! armed-when e000 == 01\ne000 e00f score\n",
        encoding="utf-8",
    )
    (folder / "norom.regions").write_text("norom.rom\nc000 c001\n", encoding="utf-8")
    (folder / "broken.regions").write_text("broken.rom\nzzzz 0000\n", encoding="utf-8")
    return folder


# Tests share one source address (127.0.0.1) unless they pick another: its shares are wide open
# here, and the tests of the per-source limits set the ones they test.
OPEN_SOURCES = SourceLimits(
    connections=10_000,
    rooms=10_000,
    password_checks=100,
    password_rate=1000.0,
    password_burst=1000,
    rate=1e6,
    burst=10**6,
    relay_rate=1e12,
    relay_burst=10**12,
    roster_rate=1e6,
    roster_burst=10**6,
    frame_rate=1e6,
    frame_burst=10**6,
)


def config_for(games: Path, **changes: Any) -> Config:
    base = Config(
        games=[games], heartbeat=30.0, hello_timeout=5.0, rate=1000.0, burst=1000, sources=OPEN_SOURCES
    )
    return replace(base, **changes)


@asynccontextmanager
async def running(config: Config, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """The app served on 127.0.0.1 as `msxsync-rendezvous` serves it (guarded site, short
    keep-alive), on the port the kernel gives (port 0); yields its base URL."""
    runner = listener.runner(create_app(config), config.keepalive_timeout, shutdown_timeout=2.0)
    await runner.setup()
    guard = public_guard(config)
    timeout = config.tls_handshake_timeout
    site = listener.GuardedSite(runner, "127.0.0.1", 0, guard, timeout, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def games(tmp_path: Path) -> Path:
    """A games folder from `make_games` (demo with its ROM, norom, broken)."""
    return make_games(tmp_path / "games")


@pytest.fixture
async def base(games: Path) -> AsyncIterator[str]:
    """The URL of a rendezvous serving `games` on 127.0.0.1, with `config_for`'s limits."""
    async with running(config_for(games)) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp client session for talking to `base`."""
    async with aiohttp.ClientSession() as client:
        yield client


class Player:
    """One websocket client that can say hello and read messages with timeouts."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, name: str) -> None:
        self.ws = ws
        self.name = name
        self.signing = SigningKey.generate()
        self.key = self.signing.verify_key.encode().hex()
        self.nonce = b""
        self.welcomed: dict[str, Any] = {}  # the welcome, once logged in

    async def next(self, within: float = WAIT) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=within)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"{self.name}: got {msg.type!r} instead of a message")
        body = json.loads(msg.data)
        assert isinstance(body, dict)
        return body

    async def expect(self, kind: str, within: float = WAIT) -> dict[str, Any]:
        """The next message of type `kind`, skipping others (presence events come in bursts)."""
        async with asyncio.timeout(within):
            while True:
                body = await self.next(within)
                if body["type"] == kind:
                    return body

    async def error(self, code: str) -> dict[str, Any]:
        body = await self.expect("error")
        assert body["code"] == code, body
        return body

    async def send(self, **body: Any) -> None:
        await self.ws.send_str(json.dumps(body))

    async def challenge(self) -> None:
        body = await self.next()
        assert body["type"] == "challenge" and body["version"] == protocol.PROTOCOL_VERSION
        self.nonce = bytes.fromhex(body["nonce"])

    def hello(self, version: int = protocol.PROTOCOL_VERSION) -> dict[str, Any]:
        signature = self.signing.sign(protocol.signed_hello_bytes(self.nonce)).signature
        return {
            "type": "hello",
            "version": version,
            "name": self.name,
            "key": self.key,
            "signature": signature.hex(),
        }

    async def login(self) -> dict[str, Any]:
        await self.challenge()
        await self.send(**self.hello())
        self.welcomed = await self.expect("welcome")
        return self.welcomed

    async def join(self, room: str | None, game: str = "demo", **extra: Any) -> None:
        await self.send(type="join", game=game, room=room, **extra)

    async def wait_closed(self, within: float = WAIT) -> aiohttp.WSMessage:
        """Read until the server closes the socket; returns the closing message."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.ws.receive()
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return msg


def _small_receive_buffer(info: Any) -> socket.socket:
    family, kind, proto, _, _ = info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # set before connect: no autotuning
    return sock


def reading_slowly() -> aiohttp.ClientSession:
    """A client session with a small socket receive buffer: a client that does not keep up falls
    behind after a few hundred kilobytes (aiohttp's and the kernel's), not the tens of megabytes
    loopback autotuning allows, so that tests of slow readers need not send that much."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=_small_receive_buffer))


def from_address(address: str) -> aiohttp.ClientSession:
    """A client session whose connections come from `address` (any of 127.0.0.0/8 on Linux)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


@asynccontextmanager
async def connect(
    session: aiohttp.ClientSession, base: str, name: str = "p", **kwargs: Any
) -> AsyncIterator[Player]:
    async with session.ws_connect(f"{base}/ws", **kwargs) as ws:
        yield Player(ws, name)


@asynccontextmanager
async def logged_in(session: aiohttp.ClientSession, base: str, name: str) -> AsyncIterator[Player]:
    async with connect(session, base, name) as player:
        await player.login()
        yield player
