"""The real signalling client against a hostile rendezvous: a real aiohttp server on 127.0.0.1.

The rendezvous here speaks the protocol correctly except where a test makes it send the hostile
frames of tests/hostile.py (the same ones the server is tested with): in the room, the client
logs them and carries on; during the handshake (or when the frame breaks the WebSocket itself)
it reconnects, and joins on the next connection. `run()` never ends with anything but a refusal.
The real server is fed the same garbage and keeps answering.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from nacl.signing import SigningKey, VerifyKey

import peer.mesh.signalling
from peer.mesh.signalling import SignallingClient
from rendezvous import wire
from tests.hostile import GARBAGE_TEXTS, KEY
from tests.mesh_support import SignalRecorder
from tests.rendezvous_support import config_for, logged_in, make_games, running

WAIT = 10.0
OTHER = bytes.fromhex(KEY)
NONCE = bytes(range(32))
MARK = {"kind": "still-listening"}

Script = Callable[[web.WebSocketResponse], Awaitable[None]]


class Rendezvous:
    """Correct, except that connection number `n` runs `hostile[n]` at its `where` point."""

    def __init__(self, hostile: dict[int, tuple[str, Script]]) -> None:
        self.hostile = hostile
        self.connections = 0

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        where, script = self.hostile.get(self.connections, ("nowhere", _nothing))
        if where == "handshake":
            await script(ws)
        if ws.closed:
            return ws
        await ws.send_json({"type": "challenge", "version": wire.PROTOCOL_VERSION, "nonce": NONCE.hex()})
        hello = await ws.receive_json(timeout=WAIT)
        VerifyKey(bytes.fromhex(hello["key"])).verify(
            wire.signed_hello_bytes(NONCE), bytes.fromhex(hello["signature"])
        )
        await ws.send_json({"type": "welcome", "version": wire.PROTOCOL_VERSION, "key": hello["key"]})
        join = await ws.receive_json(timeout=WAIT)
        members = [{"key": hello["key"], "name": "me", "ready": False}, {"key": KEY, "name": "other"}]
        await ws.send_json({"type": "joined", "room": join["room"], "host": hello["key"], "members": members})
        if where == "room":
            await script(ws)
            if ws.closed:
                return ws
        await ws.send_json({"type": "signal", "from": KEY, "data": MARK})
        async for _ in ws:
            pass
        return ws


async def _nothing(ws: web.WebSocketResponse) -> None:
    pass


@asynccontextmanager
async def serving(rendezvous: Rendezvous) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/ws", rendezvous.handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def play(rendezvous: Rendezvous) -> tuple[SignallingClient, SignalRecorder]:
    """Run a client until the rendezvous' mark arrives; the client must still be running then."""
    recorder = SignalRecorder(waiting_for=MARK)
    async with serving(rendezvous) as url:
        client = SignallingClient(
            url,
            signing_key=SigningKey.generate(),
            name="me",
            game="demo",
            room="r",
            password=None,
            listener=recorder,
        )
        async with asyncio.TaskGroup() as tasks:
            running_client = tasks.create_task(client.run())
            async with asyncio.timeout(WAIT):
                await recorder.heard.wait()
            assert not running_client.done()
            running_client.cancel()
    return client, recorder


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peer.mesh.signalling, "BACKOFF_FIRST", 0.05)


# ---- in the room: log and carry on ---------------------------------------------------------------


async def test_garbage_in_the_room_is_skipped_on_the_same_connection() -> None:
    async def garbage(ws: web.WebSocketResponse) -> None:
        for text in GARBAGE_TEXTS:
            await ws.send_str(text)
        await ws.send_bytes(b"\x00\xff binary")

    client, recorder = await play(Rendezvous({1: ("room", garbage)}))
    assert client.stats.connects == 1 and client.stats.disconnects == 0
    assert client.stats.malformed >= len(GARBAGE_TEXTS) - 6  # a few are ignored, not malformed
    assert recorder.signals == [(OTHER, MARK)]
    assert [r.keys[1:] for r in recorder.rosters] == [[OTHER]]


# ---- broken enough to reconnect -----------------------------------------------------------------


async def _send(ws: web.WebSocketResponse, frame: str | bytes) -> None:
    if isinstance(frame, bytes):
        await ws.send_bytes(frame)
    else:
        await ws.send_str(frame)


def _sends(*frames: str | bytes) -> Script:
    async def script(ws: web.WebSocketResponse) -> None:
        for frame in frames:
            await _send(ws, frame)
        await ws.receive(timeout=WAIT)  # until the client hangs up

    return script


async def _bad_utf8(ws: web.WebSocketResponse) -> None:
    await ws.send_frame(b'{"type": "\xff\xfe"}', WSMsgType.TEXT)
    await ws.receive(timeout=WAIT)


async def _hang_up(ws: web.WebSocketResponse) -> None:
    await ws.close()


HANDSHAKE_CASES: dict[str, Script] = {
    "nested JSON": _sends("[" * 100_000),
    "non-hex nonce": _sends(
        json.dumps({"type": "challenge", "version": wire.PROTOCOL_VERSION, "nonce": "zz" * 32})
    ),
    "nonce with a newline": _sends(json.dumps({"type": "challenge", "nonce": NONCE.hex()[:-1] + "\n"})),
    "binary": _sends(b"\x00" * 64),
    "welcome first": _sends('{"type": "welcome"}'),
    "roster first": _sends(GARBAGE_TEXTS[-1]),
    "over 256 KiB": _sends("x" * 300_000),
    "bad UTF-8": _bad_utf8,
    "hang up": _hang_up,
}


@pytest.mark.parametrize("case", HANDSHAKE_CASES)
async def test_a_broken_handshake_means_a_reconnect(case: str) -> None:
    client, recorder = await play(Rendezvous({1: ("handshake", HANDSHAKE_CASES[case])}))
    assert client.stats.connects == 1  # only the second connection got as far as welcome
    assert recorder.signals == [(OTHER, MARK)]


ROOM_CASES: dict[str, Script] = {
    "over 256 KiB": _sends(json.dumps({"type": "chat", "text": "x" * 300_000})),
    "bad UTF-8": _bad_utf8,
    "fatal error": _sends('{"type": "error", "code": "odd", "message": "m", "fatal": true}'),
    "hang up": _hang_up,
}


@pytest.mark.parametrize("case", ROOM_CASES)
async def test_a_broken_socket_in_the_room_means_a_rejoin(case: str) -> None:
    client, recorder = await play(Rendezvous({1: ("room", ROOM_CASES[case])}))
    assert client.stats.connects == 2 and client.stats.disconnects == 1
    assert client.joined and recorder.signals == [(OTHER, MARK)]


# ---- the server, fed the same garbage -------------------------------------------------------------


async def test_the_server_answers_the_same_garbage_and_carries_on(tmp_path: Path) -> None:
    config = config_for(make_games(tmp_path / "games"))
    async with (
        running(config) as url,
        aiohttp.ClientSession() as session,
        logged_in(session, url, "a") as player,
    ):
        for text in GARBAGE_TEXTS:
            await player.ws.send_str(text)
            error = await player.expect("error")
            assert error["code"] in {"bad_json", "bad_message", "unknown_type", "too_large"}, text
            assert error["fatal"] is False
        await player.join("r")
        await player.expect("joined")
