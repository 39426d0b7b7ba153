"""Peers that meet through the real rendezvous (aiohttp on a loopback socket) and sync over
real aiortc on loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from peer.core.mesh.events import LinkLost
from peer.core.sync.replica import CutPeer, Event
from peer.mesh.mesh import Mesh
from peer.mesh.room import RoomConfig, RoomSession
from tests.mesh_support import LOOPBACK, REGIONS, random_changes, rendezvous
from tests.rendezvous_support import from_address, logged_in


@dataclass
class Players:
    sessions: list[RoomSession]
    events: list[Event]  # everyone's, in order


@asynccontextmanager
async def players(
    url: str, count: int, *, room: str | None = "friday", password: str | None = None
) -> AsyncIterator[Players]:
    """`count` players in one room, each with its own RoomSession, all with a mesh."""
    events: list[Event] = []
    sessions = [
        RoomSession(
            RoomConfig(
                rendezvous=url,
                signing_key=SigningKey.generate(),
                name=f"p{i}",
                game="demo",
                regions=REGIONS,
                room=room,
                password=password,
                ice=LOOPBACK,
            ),
            on_event=events.append,
        )
        for i in range(count)
    ]
    async with asyncio.TaskGroup() as tasks:
        for session in sessions:
            tasks.create_task(session.run())
        try:
            async with asyncio.timeout(10):
                for session in sessions:
                    await session.wait_ready()
            yield Players(sessions, events)
        finally:
            for session in sessions:
                session.stop()


async def wait_meshed(group: Players, within: float = 15) -> list[Mesh]:
    meshes = [s.mesh for s in group.sessions if s.mesh is not None]
    async with asyncio.timeout(within):
        for mesh in meshes:
            await mesh.wait_until(lambda mesh=mesh: len(mesh.admitted()) == len(meshes) - 1)  # type: ignore[misc]
    return meshes


async def write_and_converge(meshes: list[Mesh], rng: random.Random, frames: int) -> None:
    for _ in range(frames):
        for mesh in meshes:
            mesh.local_changes(random_changes(rng, 3))
        await asyncio.sleep(0)  # one frame's batches leave before the next frame's

    def same() -> bool:
        return len({m.replica.state.digest() for m in meshes}) == 1

    async with asyncio.timeout(15):
        while not same():
            await asyncio.wait(
                [asyncio.ensure_future(m.wait_until(same)) for m in meshes],
                return_when=asyncio.FIRST_COMPLETED,
            )


@pytest.mark.parametrize("count", [2, 3, 4])
async def test_peers_meet_through_rendezvous_and_converge(tmp_path: Path, count: int) -> None:
    async with rendezvous(tmp_path) as server, players(server.url, count) as group:
        meshes = await wait_meshed(group)
        await write_and_converge(meshes, random.Random(count), frames=20)
        assert len({m.replica.state.digest() for m in meshes}) == 1


async def test_password_room_admits_members(tmp_path: Path) -> None:
    async with (
        rendezvous(tmp_path) as server,
        players(server.url, 2, password="sesame") as group,
    ):
        meshes = await wait_meshed(group)
        await write_and_converge(meshes, random.Random(9), frames=5)


async def test_quick_match(tmp_path: Path) -> None:
    async with (
        rendezvous(tmp_path) as server,
        players(server.url, 2, room=None) as group,
    ):
        meshes = await wait_meshed(group)
        assert meshes[0].room == meshes[1].room and meshes[0].room.startswith("quick-")


async def test_mesh_survives_rendezvous_restart(tmp_path: Path) -> None:
    async with rendezvous(tmp_path) as server, players(server.url, 3) as group:
        meshes = await wait_meshed(group)
        await server.stop()  # the rendezvous goes away: game traffic does not care
        await write_and_converge(meshes, random.Random(3), frames=10)
        await server.start()  # back on the same port: every signalling client rejoins
        async with asyncio.timeout(15):
            for session in group.sessions:
                client = session.signalling
                await client.wait_until(lambda c=client: c.stats.connects == 2 and c.joined)  # type: ignore[misc]
        await write_and_converge(meshes, random.Random(4), frames=10)
        # Partial rosters while the others rejoin must not have torn any link down.
        assert not [e for e in group.events if isinstance(e, LinkLost)]


async def test_a_joiner_accepts_the_signed_writes_of_a_member_who_left_before_it_came(tmp_path: Path) -> None:
    """Writes stay signed by their authors (protocol 3) and a joiner only accepts members' batches:
    the rendezvous names the members who left (`past`), so their writes still reach newcomers."""
    async with rendezvous(tmp_path) as server, players(server.url, 2) as group:
        first, second = await wait_meshed(group)
        first.local_changes([(REGIONS[0].start, b"\x2a")])
        async with asyncio.timeout(10):
            await second.wait_until(lambda: second.replica.state.read(REGIONS[0].start) == b"\x2a")
        group.sessions[0].stop()  # the writer leaves the room for good
        async with asyncio.timeout(10):
            await second.wait_until(lambda: not second.admitted())
        async with players(server.url, 1) as newcomer:
            session = newcomer.sessions[0]
            assert session.mesh is not None
            mesh = session.mesh
            async with asyncio.timeout(15):
                await mesh.wait_until(lambda: mesh.replica.state.read(REGIONS[0].start) == b"\x2a")
            assert session.signalling.roster is not None
            assert first.key in session.signalling.roster.past
            refused = mesh.replica.statistics().rejections
            assert refused["unknown_author"] == 0, refused
            assert mesh.replica.state.digest() == second.replica.state.digest()


async def test_throw_away_keys_cannot_make_a_joiner_refuse_a_past_players_writes(tmp_path: Path) -> None:
    """Issue 30, F5, end to end: a player writes 250 batches and leaves; 70 throw-away keys (from
    another address) join the room and leave at once. The past list pushed the player out, and a
    joiner refused the player's batches in the honest member's full state, counted each against
    it and cut it. Now the player stays on the list (and the member's holding would vouch)."""
    async with rendezvous(tmp_path) as server, players(server.url, 2) as group:
        first, second = await wait_meshed(group)
        start = REGIONS[0].start
        for n in range(250):
            first.local_changes([(start + n, bytes([n % 255 + 1]))])
            await asyncio.sleep(0.002)  # (one batch each, as a game writing over many frames)
        written = bytes(n % 255 + 1 for n in range(250))
        async with asyncio.timeout(15):
            await second.wait_until(lambda: second.replica.state.read(start, 250) == written)
        group.sessions[0].stop()  # the player leaves for good
        async with asyncio.timeout(10):
            await second.wait_until(lambda: not second.admitted())
        async with from_address("127.0.0.5") as http:
            for number in range(70):
                async with logged_in(http, server.url, f"x{number}") as throw_away:
                    await throw_away.join("friday")
                    await throw_away.expect("joined")
                    await throw_away.send(type="leave")
                    await throw_away.expect("left")
        async with players(server.url, 1) as newcomer:
            session = newcomer.sessions[0]
            assert session.mesh is not None and session.signalling.roster is not None
            mesh = session.mesh
            assert first.key in session.signalling.roster.past
            async with asyncio.timeout(15):
                await mesh.wait_until(lambda: mesh.replica.state.read(start, 250) == written)
            stats = mesh.replica.statistics()
            assert stats.rejections["unknown_author"] == 0, stats.rejections
            assert not stats.peers[second.key].rejections, stats.peers[second.key].rejections
            assert not [e for e in newcomer.events if isinstance(e, CutPeer)]
            assert mesh.admitted() == {second.key}
