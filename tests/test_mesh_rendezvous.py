"""Peers that meet through the real rendezvous (aiohttp on a loopback socket) and sync over
real aiortc on loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from peer.core.replica import Event
from peer.mesh.mesh import Mesh
from peer.mesh.room import RoomSession
from tests.mesh_support import LOOPBACK, REGIONS, Rendezvous, random_changes, rendezvous


@asynccontextmanager
async def players(
    url: str, count: int, *, room: str | None = "friday", password: str | None = None
) -> AsyncIterator[list[RoomSession]]:
    """`count` players in one room, each with its own RoomSession, all with a mesh."""
    events: list[Event] = []
    sessions = [
        RoomSession(
            rendezvous=url,
            signing_key=SigningKey.generate(),
            name=f"p{i}",
            game="demo",
            room=room,
            password=password,
            regions=REGIONS,
            ice=LOOPBACK,
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
            yield sessions
        finally:
            for session in sessions:
                session.stop()


def meshes_of(sessions: list[RoomSession]) -> list[Mesh]:
    return [s.mesh for s in sessions if s.mesh is not None]


async def wait_meshed(sessions: list[RoomSession], within: float = 15) -> list[Mesh]:
    meshes = meshes_of(sessions)
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
    async with rendezvous(tmp_path) as server, players(await server_url(server), count) as sessions:
        meshes = await wait_meshed(sessions)
        await write_and_converge(meshes, random.Random(count), frames=20)
        assert len({m.replica.state.digest() for m in meshes}) == 1


async def server_url(server: Rendezvous) -> str:
    return f"http://127.0.0.1:{server.port}"


async def test_password_room_admits_members(tmp_path: Path) -> None:
    async with (
        rendezvous(tmp_path) as server,
        players(await server_url(server), 2, password="sesame") as sessions,
    ):
        meshes = await wait_meshed(sessions)
        await write_and_converge(meshes, random.Random(9), frames=5)


async def test_quick_match(tmp_path: Path) -> None:
    async with (
        rendezvous(tmp_path) as server,
        players(await server_url(server), 2, room=None) as sessions,
    ):
        meshes = await wait_meshed(sessions)
        assert meshes[0].room == meshes[1].room and meshes[0].room.startswith("quick-")


async def test_mesh_survives_rendezvous_restart(tmp_path: Path) -> None:
    async with rendezvous(tmp_path) as server, players(await server_url(server), 3) as sessions:
        meshes = await wait_meshed(sessions)
        await server.stop()  # the rendezvous goes away: game traffic does not care
        await write_and_converge(meshes, random.Random(3), frames=10)
        await server.start()  # back on the same port: every signalling client rejoins
        async with asyncio.timeout(15):
            for session in sessions:
                client = session.signalling
                await client.wait_until(lambda c=client: c.stats.connects == 2 and c.joined)  # type: ignore[misc]
        await write_and_converge(meshes, random.Random(4), frames=10)
        for mesh in meshes:
            for stats in mesh.statistics().values():
                assert stats.links_lost == 0
