"""The rendezvous limits over a real loopback socket, and a fuzz of the websocket protocol."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import hostile_frames
from tests.rendezvous_support import (
    Player,
    config_for,
    connect,
    logged_in,
    make_games,
    running,
)

# --- limits -------------------------------------------------------------------------------


async def test_heartbeat_drops_a_silent_client(games: Path, session: aiohttp.ClientSession) -> None:
    async with (
        running(config_for(games, heartbeat=1.0)) as url,
        logged_in(session, url, "watcher") as watcher,
        connect(session, url, "silent", autoping=False) as silent,
    ):
        await watcher.join("r")
        await watcher.expect("joined")
        await silent.login()
        await silent.join("r")
        await watcher.expect("member_joined")
        # The silent client never answers pings: the server drops it (within 1.5 heartbeats)
        # and tells the room.
        left = await watcher.expect("member_left", within=10)
        assert left["key"] == silent.key


async def test_too_large_message(base: str, session: aiohttp.ClientSession) -> None:
    async with logged_in(session, base, "a") as a:
        await a.send(type="chat", text="x" * 70_000)
        await a.error("too_large")
        await a.send(type="chat", text="still here")
        await a.error("not_in_room")
        await a.ws.send_bytes(b"\x00\x01")  # a relayed frame (protocol 3), but a is in no room
        await a.error("not_in_room")
        await a.send(type="chat", text="x" * 300_000)  # far above: aiohttp closes with 1009
        closing = await a.wait_closed()
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009
    async with logged_in(session, base, "b") as b:  # and the server still serves others
        await b.join("r")
        await b.expect("joined")


async def test_rate_limit_then_flood_disconnect(games: Path, session: aiohttp.ClientSession) -> None:
    async with (
        running(config_for(games, rate=0.1, burst=5)) as url,  # no refill during the test
        logged_in(session, url, "flood") as flood,
    ):
        for _ in range(30):
            await flood.send(type="leave")
        codes = [(await flood.expect("error"))["code"] for _ in range(5)]
        # The burst (less the hello) is admitted and answered, then one rate_limited.
        assert codes == ["not_in_room"] * 4 + ["rate_limited"]
        error = await flood.error("flooding")
        assert error["fatal"] is True
        await flood.wait_closed()


async def test_password_hashing_queue_is_bounded(games: Path, session: aiohttp.ClientSession) -> None:
    async with (
        running(config_for(games, hash_waiting=0)) as url,
        logged_in(session, url, "a") as a,
    ):
        await a.join("vault", password="pw")
        await a.error("busy")
        await a.join("open")  # no password: no hashing, no queue
        await a.expect("joined")


async def test_max_clients(games: Path, session: aiohttp.ClientSession) -> None:
    async with (
        running(config_for(games, max_clients=1)) as url,
        logged_in(session, url, "first"),
        connect(session, url, "second") as second,
    ):
        error = await second.next()
        assert error["type"] == "error" and error["code"] == "server_full"
        await second.wait_closed()


async def test_client_that_does_not_read_is_dropped(games: Path, session: aiohttp.ClientSession) -> None:
    async with (
        running(config_for(games, send_queue=4, rate=1e6, burst=10**6)) as url,
        logged_in(session, url, "sender") as sender,
        connect(session, url, "sleeper", max_msg_size=0) as sleeper,
    ):
        await sleeper.login()
        await sender.join("r")
        await sender.expect("joined")
        await sleeper.join("r")
        await sender.expect("member_joined")
        # The server's own messages (here `member_ready` events) fill its queue: what other members
        # relay to it is dropped past its share instead (tests/test_rendezvous_round_two_traffic.py).
        left = None
        for n in range(200_000):  # ~30 MB at most; kernel buffers fill long before that
            await sender.send(type="ready", ready=n % 2 == 0)
            try:
                msg = await sender.ws.receive(timeout=0.001)
            except TimeoutError:
                continue
            body = json.loads(msg.data)
            if body["type"] == "member_left":
                left = body
                break
        assert left is not None and left["key"] == sleeper.key


async def test_shutdown_closes_websockets(games: Path, session: aiohttp.ClientSession) -> None:
    async with running(config_for(games)) as url:
        player_cm = logged_in(session, url, "a")
        player: Player = await player_cm.__aenter__()
    closing = await player.wait_closed()
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await player_cm.__aexit__(None, None, None)


async def test_server_keeps_answering_after_garbage(base: str, session: aiohttp.ClientSession) -> None:
    async with logged_in(session, base, "a") as a:
        for garbage in ("", "{", "null", "[]", '{"type":null}', '{"type":"x"}'):
            await a.ws.send_str(garbage)
            assert (await a.expect("error"))["code"] in {"bad_json", "bad_message", "unknown_type"}
        await a.join("r")
        await a.expect("joined")


# --- fuzz ---------------------------------------------------------------------------------

TYPES = ["hello", "join", "leave", "kick", "ready", "signal", "chat", "welcome", "", "JOIN"]
FIELDS = [
    "version",
    "name",
    "key",
    "signature",
    "game",
    "room",
    "password",
    "capacity",
    "to",
    "data",
    "text",
    "ready",
]
frames = hostile_frames(TYPES, FIELDS)  # the client's tests send the same shapes


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for all fuzz examples, on its own event loop in a thread."""
    games = make_games(tmp_path_factory.mktemp("fuzz") / "games")
    ready: queue.Queue[str] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        async with running(config_for(games)) as url:
            ready.put(url)
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    try:
        yield ready.get(timeout=30)
    finally:
        stop.set()
        thread.join(timeout=30)


async def _fuzz_once(url: str, sequence: list[str | bytes], login: bool) -> None:
    async with aiohttp.ClientSession() as session:
        async with connect(session, url, "fuzzer") as fuzzer:
            if login:
                await fuzzer.login()
            for frame in sequence:
                if isinstance(frame, bytes):
                    await fuzzer.ws.send_bytes(frame)
                else:
                    await fuzzer.ws.send_str(frame)
            # Unless a fatal error ended it, the same connection still answers in order.
            await fuzzer.send(type="still-there?")
            try:
                while True:
                    body = await fuzzer.expect("error")
                    if body.get("request") == "still-there?" or body["fatal"]:
                        break
            except ConnectionError:
                pass  # closed after a fatal error: allowed, checked below on a new connection
        async with logged_in(session, url, "checker") as checker:
            await checker.join(None)
            assert (await checker.expect("joined"))["game"] == "demo"


@given(sequence=frames, login=st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_frames_never_break_the_server(
    fuzz_server: str, sequence: list[str | bytes], login: bool
) -> None:
    asyncio.run(_fuzz_once(fuzz_server, sequence, login))
