"""The rendezvous's relay of mesh frames (PROTOCOL.md, "Relay") over a real loopback socket: frames
go only to another member of the sender's room, tagged with the sender's key; the per-client and
per-room byte rates hold; `--no-relay` turns it off and the welcome says so."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from rendezvous.relay import RelayLimits
from tests.rendezvous_support import Player, config_for, logged_in, running

FRAME = 1000


async def joined(players: list[Player], room: str = "r") -> None:
    for player in players:
        await player.join(room)
        await player.expect("joined")


async def binary_frames(player: Player, within: float) -> list[bytes]:
    """Every binary frame that arrives until nothing has come for `within` seconds."""
    frames: list[bytes] = []
    while True:
        try:
            msg = await player.ws.receive(timeout=within)
        except TimeoutError:
            return frames
        if msg.type == aiohttp.WSMsgType.BINARY:
            frames.append(msg.data)


async def test_frames_reach_only_the_named_member_tagged_with_the_sender(
    games: Path, session: aiohttp.ClientSession
) -> None:
    async with (
        running(config_for(games)) as url,
        logged_in(session, url, "a") as a,
        logged_in(session, url, "b") as b,
        logged_in(session, url, "c") as c,
    ):
        assert a.welcomed["relay"]["room_rate"] > 0
        await joined([a, b])
        await joined([c], room="elsewhere")
        await a.ws.send_bytes(bytes.fromhex(b.key) + b"\x01sealed")
        assert await binary_frames(b, 0.5) == [bytes.fromhex(a.key) + b"\x01sealed"]
        await a.ws.send_bytes(bytes.fromhex(c.key) + b"\x01x")  # not in a's room
        await a.error("bad_target")
        await a.ws.send_bytes(bytes.fromhex(b.key) + b"\x01again")  # (ends the spell of refusals:
        assert await binary_frames(b, 0.5) == [bytes.fromhex(a.key) + b"\x01again"]  # told once each)
        await a.ws.send_bytes(bytes.fromhex(a.key) + b"\x01x")  # nor to itself
        await a.error("bad_target")
        assert await binary_frames(a, 0.3) == [] and await binary_frames(b, 0.3) == []
        assert await binary_frames(c, 0.3) == []


async def test_the_relay_limits_hold_per_client_and_per_room(
    games: Path, session: aiohttp.ClientSession
) -> None:
    # (The room refills slower than a client, so that it binds c whatever the time a's part took:
    # rosters arriving at b while it waits for silence lengthen that part.)
    limits = RelayLimits(client_rate=2000, client_burst=5 * FRAME, room_rate=1000, room_burst=8 * FRAME)
    async with (
        running(config_for(games, relay=limits)) as url,
        logged_in(session, url, "a") as a,
        logged_in(session, url, "b") as b,
        logged_in(session, url, "c") as c,
    ):
        await joined([a, b, c])
        began = asyncio.get_running_loop().time()
        for _ in range(50):  # 50 kB at once: far beyond one client's burst
            await a.ws.send_bytes(bytes.fromhex(b.key) + b"\x01" + bytes(FRAME - 1))
        error = await a.error("rate_limited")
        assert "client" in error["message"] and error["fatal"] is False
        got = await binary_frames(b, 0.5)
        elapsed = asyncio.get_running_loop().time() - began
        assert 5 <= len(got) <= 5 + int(elapsed * 2000 / FRAME) + 1, (len(got), elapsed)
        # The room's bucket (8 frames, 3 left after a's 5) binds c although c's own is full.
        for _ in range(20):
            await c.ws.send_bytes(bytes.fromhex(b.key) + b"\x01" + bytes(FRAME - 1))
        error = await c.error("rate_limited")
        assert "room" in error["message"]
        got = await binary_frames(b, 0.5)
        assert 3 <= len(got) <= 3 + int(3 * 1000 / FRAME), len(got)
        async with session.get(f"{url}/healthz") as reply:
            relay = (await reply.json())["relay"]
        assert relay["dropped_client"] >= 40 and relay["dropped_room"] >= 10, relay


async def test_no_relay_says_so_in_the_welcome_and_refuses_frames(
    games: Path, session: aiohttp.ClientSession
) -> None:
    async with (
        running(config_for(games, relay=RelayLimits(enabled=False))) as url,
        logged_in(session, url, "a") as a,
        logged_in(session, url, "b") as b,
    ):
        assert a.welcomed["relay"] is None
        await joined([a, b])
        await a.ws.send_bytes(bytes.fromhex(b.key) + b"\x01x")
        await a.error("binary_not_supported")
        assert await binary_frames(b, 0.3) == []


async def test_a_closed_rooms_relay_budget_goes_with_it(games: Path, session: aiohttp.ClientSession) -> None:
    """Rooms opened, relayed in and left over one connection leave no budget behind (they
    piled up until some connection ended); a room opened again starts with a full one."""
    async with (
        running(config_for(games)) as url,
        logged_in(session, url, "a") as a,
        logged_in(session, url, "b") as b,
    ):

        async def budgets() -> int:
            async with session.get(f"{url}/healthz") as reply:
                return int((await reply.json())["relay"]["room_budgets"])

        for n in range(5):
            await joined([a, b], room=f"room-{n}")
            await a.ws.send_bytes(bytes.fromhex(b.key) + b"\x01frame")
            assert await binary_frames(b, 0.3) == [bytes.fromhex(a.key) + b"\x01frame"]
            assert await budgets() == 1  # this room's: none of the rooms before
            await b.send(type="leave")  # the room goes on with a alone, then closes
            await a.send(type="leave")
        await a.join("probe")  # (its answer says both leaves were handled)
        await a.expect("joined")
        assert await budgets() == 0
