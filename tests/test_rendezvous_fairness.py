"""Issue 16: one misbehaving address cannot shut others out. Each finding of the outside test,
replayed on loopback from distinct source addresses (127.0.0.2 attacks, 127.0.0.3 is honest)."""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from tests.rendezvous_support import (
    OPEN_SOURCES,
    Player,
    config_for,
    connect,
    from_address,
    logged_in,
    reading_slowly,
    running,
)

ATTACKER = "127.0.0.2"
HONEST = "127.0.0.3"


async def test_one_address_cannot_take_every_connection_slot(games: Path) -> None:
    config = config_for(games, max_clients=6, sources=replace(OPEN_SOURCES, connections=3))
    async with (
        running(config) as url,
        from_address(ATTACKER) as attacker,
        from_address(HONEST) as honest,
        AsyncExitStack() as stack,
    ):
        welcomed, refused = 0, []
        for i in range(6):  # welcomed sockets that answer pings, as many as the server holds
            player = await stack.enter_async_context(connect(attacker, url, f"a{i}"))
            first = await player.next()
            if first["type"] == "error":
                refused.append(first["code"])
                continue
            player.nonce = bytes.fromhex(first["nonce"])
            await player.send(**player.hello())
            await player.expect("welcome")
            welcomed += 1
        assert welcomed == 3 and refused == ["too_many_connections"] * 3
        async with logged_in(honest, url, "honest") as player:
            await player.join("home")
            await player.expect("joined")


async def test_one_address_cannot_create_every_room(games: Path) -> None:
    config = config_for(games, max_rooms=6, sources=replace(OPEN_SOURCES, rooms=2))
    async with (
        running(config) as url,
        from_address(ATTACKER) as attacker,
        from_address(HONEST) as honest,
        AsyncExitStack() as stack,
    ):
        codes = []
        for i in range(6):
            player = await stack.enter_async_context(logged_in(attacker, url, f"a{i}"))
            await player.join(f"squat-{i}")
            codes.append((await player.next())["type"])
            if codes[-1] == "error":
                continue
        assert codes.count("joined") == 2
        async with logged_in(honest, url, "honest") as player:
            await player.join("home")
            await player.expect("joined")
            await player.send(type="leave")
            await player.expect("left")
            await player.join(None)  # quick match opens a room too
            await player.expect("joined")


async def _guess_until(player: Player, stop: asyncio.Event, room: str, busy: asyncio.Event) -> list[str]:
    codes = []
    while not stop.is_set():
        await player.join(room, password="guess")
        codes.append((await player.expect("error"))["code"])
        if codes[-1] == "busy":
            busy.set()
    return codes


async def test_one_address_cannot_fill_the_password_queue(games: Path) -> None:
    limits = replace(OPEN_SOURCES, password_checks=1)
    config = config_for(games, hash_concurrency=1, hash_waiting=4, sources=limits)
    async with (
        running(config) as url,
        from_address(ATTACKER) as attacker,
        from_address(HONEST) as honest,
        AsyncExitStack() as stack,
    ):
        owner = await stack.enter_async_context(logged_in(attacker, url, "owner"))
        await owner.join("vault", password="secret")
        await owner.expect("joined")
        guessers = [await stack.enter_async_context(logged_in(attacker, url, f"g{i}")) for i in range(8)]
        stop, busy = asyncio.Event(), asyncio.Event()
        guessing = [asyncio.create_task(_guess_until(g, stop, "vault", busy)) for g in guessers]
        try:
            async with asyncio.timeout(10):
                await busy.wait()  # the attacker's guesses fill its share of the queue: now the honest player
            async with logged_in(honest, url, "honest") as player:
                for attempt in range(3):
                    await player.join(f"home-{attempt}", password="ours")
                    answer = await player.next()
                    assert answer["type"] == "joined", answer
                    await player.send(type="leave")
                    await player.expect("left")
        finally:
            stop.set()
            codes = [c for codes in await asyncio.gather(*guessing) for c in codes]
        assert "wrong_password" in codes and "busy" in codes


async def test_password_guesses_per_address_survive_new_keys(games: Path) -> None:
    limits = replace(OPEN_SOURCES, password_rate=1 / 60, password_burst=3)
    async with (
        running(config_for(games, sources=limits)) as url,
        from_address(HONEST) as honest,
        from_address(ATTACKER) as attacker,
        logged_in(honest, url, "owner") as owner,
    ):
        await owner.join("vault", password="secret")
        await owner.expect("joined")
        codes = []
        for i in range(5):  # a new connection and key for every guess
            async with logged_in(attacker, url, f"g{i}") as guesser:
                await guesser.join("vault", password=f"guess{i}")
                codes.append((await guesser.expect("error"))["code"])
        assert codes == ["wrong_password"] * 3 + ["rate_limited"] * 2


async def test_chat_rate_survives_reconnects_with_new_keys(games: Path) -> None:
    limits = replace(OPEN_SOURCES, rate=5.0, burst=20)
    async with (
        running(config_for(games, sources=limits)) as url,
        from_address(HONEST) as honest,
        from_address(ATTACKER) as attacker,
        logged_in(honest, url, "member") as member,
    ):
        await member.join("r")
        await member.expect("joined")
        started = asyncio.get_running_loop().time()
        for i in range(6):  # each time a fresh key, so a fresh per-connection bucket
            async with connect(attacker, url, f"spam{i}") as spammer:
                await spammer.challenge()
                await spammer.send(**spammer.hello())
                await spammer.join("r")
                for n in range(20):  # no waiting for answers: a hello may be the one dropped
                    await spammer.send(type="chat", text=f"spam {i} {n}")
        elapsed = asyncio.get_running_loop().time() - started
        await member.send(type="chat", text="end")
        spam = 0
        while (await member.expect("chat"))["text"] != "end":
            spam += 1
        # Hellos, joins and leaves spend the same address's tokens as the chats.
        assert spam <= 20 + 5 * elapsed, (spam, elapsed)
        assert spam < 60  # 120 were sent


async def test_slow_reader_that_answers_pings_is_evicted_with_a_reason(
    games: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "msxsync.rendezvous")
    queue = {"send_share": 64 * 1024, "send_queue_bytes": 64 * 1024 * 1024, "send_queue": 100_000}
    config = config_for(games, slow_grace=0.5, rate=1e6, burst=10**6, roster_interval=0.0, **queue)
    async with (
        running(config) as url,
        aiohttp.ClientSession() as session,
        reading_slowly() as slow_session,
        logged_in(session, url, "sender") as sender,
        logged_in(slow_session, url, "slow") as slow,
    ):
        await sender.join("r")
        await sender.expect("joined")
        for n in range(64):  # 64 past members make every roster 4.6 KB
            async with logged_in(session, url, f"past{n}") as past:
                await past.join("r")
                await past.expect("joined")
        await slow.join("r")
        await sender.expect("member_joined")
        # `ready` toggles: rosters and events are the server's own messages (relayed ones, signals
        # and chat, would be dropped past the slow one's share instead of getting it evicted).
        toggles = 0

        async def read_slowly() -> aiohttp.WSMessage:
            while True:  # one message every 5 ms: it reads, just not enough
                msg = await slow.ws.receive(timeout=20)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return msg
                if left is None:  # (then what the kernel holds, at full speed, to the close frame)
                    await asyncio.sleep(0.005)

        left = None
        reader = asyncio.create_task(read_slowly())
        async with asyncio.timeout(20):
            while left is None:
                toggles += 1
                await sender.send(type="ready", ready=toggles % 2 == 0)
                try:
                    body = json.loads((await sender.ws.receive(timeout=0.005)).data)
                except TimeoutError:
                    continue
                if body["type"] == "member_left" and body["key"] == slow.key:  # (not a past one's)
                    left = body
        closing = await asyncio.wait_for(reader, 20)
    assert left["key"] == slow.key
    assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
    assert closing.extra is not None and "slow reader" in closing.extra
    assert "evicting" in caplog.text and "slow reader" in caplog.text


async def test_hello_deadline_is_absolute_even_for_a_client_that_pings(
    games: Path, session: aiohttp.ClientSession
) -> None:
    async with running(config_for(games, hello_timeout=1.0)) as url, connect(session, url) as pinger:
        await pinger.challenge()

        async def ping() -> None:
            while True:
                await pinger.ws.ping()
                await asyncio.sleep(0.2)

        pinging = asyncio.create_task(ping())
        try:
            error = await pinger.expect("error", within=5)
        finally:
            pinging.cancel()
        assert error["code"] == "hello_timeout" and error["fatal"] is True


@pytest.mark.parametrize(
    ("field", "value"),
    [("key", "{key}\n"), ("signature", "{signature}\n"), ("key", " {key}")],
)
async def test_hello_takes_no_second_spelling_of_a_key(
    base: str, session: aiohttp.ClientSession, field: str, value: str
) -> None:
    async with connect(session, base) as player:
        await player.challenge()
        hello = player.hello()
        hello[field] = value.format(**hello)
        await player.send(**hello)
        assert (await player.error("bad_message"))["request"] == "hello"


@pytest.mark.parametrize(
    "join",
    [
        {"game": "demo", "room": "r\n"},
        {"game": "demo\n", "room": "r"},
        {"game": "demo", "room": "r", "standby": "http://10.0.0.1:4567\n"},
        {"game": "demo", "room": "r", "password": "\ud800"},
        {"game": "demo", "room": "r", "password": "tab\there"},
    ],
)
async def test_every_pattern_is_a_full_match_and_every_text_encodable(
    base: str, session: aiohttp.ClientSession, join: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    async with logged_in(session, base, "a") as a:
        await a.send(type="join", **join)
        await a.error("bad_message")
        await a.join("r")  # the connection carries on
        await a.expect("joined")
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("text", ["bell\x07", "line\nbreak", "\u202egnp.exe", "x\u2066y", "\ud800"])
async def test_chat_refuses_controls_and_direction_overrides(
    base: str, session: aiohttp.ClientSession, text: str
) -> None:
    async with logged_in(session, base, "a") as a:
        await a.join("r")
        await a.expect("joined")
        await a.send(type="chat", text=text)
        await a.error("bad_message")
        await a.send(type="chat", text="fine, thanks — ça va")
        assert (await a.expect("chat"))["text"] == "fine, thanks — ça va"


async def test_before_hello_even_a_malformed_message_is_hello_required(
    base: str, session: aiohttp.ClientSession
) -> None:
    async with connect(session, base) as player:
        await player.challenge()
        for frame in ('{"type":"join"}', "not json", '{"type":"chat","text":5}'):
            await player.ws.send_str(frame)
            await player.error("hello_required")
        await player.send(**player.hello())
        await player.expect("welcome")
