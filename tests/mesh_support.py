"""Helpers for the mesh tests: in-process nodes on real aiortc over loopback.

`LocalSignals` is an in-memory signalling relay (what the rendezvous does for `signal`), used
where a test needs to control signalling itself (a relay that lies); the other tests go through
the real rendezvous.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from nacl.signing import SigningKey

from games.definition import Region
from peer.core.mesh.core import MeshCore
from peer.core.sync.replica import BytesChanged, Event, Replica
from peer.mesh.mesh import Mesh
from peer.mesh.signalling import Roster
from peer.mesh.webrtc import HIGH_WATER, LOW_WATER, IceOptions, WebRTCLinks
from rendezvous.app import create_app
from tests.rendezvous_support import config_for, make_games

ROOM = "test-room"
REGIONS = (Region(0xC000, 0xC0FF), Region(0xE000, 0xE00F))
LOOPBACK = IceOptions(host_addresses=("127.0.0.1",))
Rewrite = Callable[[bytes, bytes, dict[str, Any]], dict[str, Any] | None]


class SignalRecorder:
    """A signalling client's listener that keeps what it heard. `heard` is set when a signal
    equal to `waiting_for` arrives (any signal when it is None)."""

    def __init__(self, waiting_for: dict[str, Any] | None = None) -> None:
        self.rosters: list[Roster] = []
        self.signals: list[tuple[bytes, dict[str, Any]]] = []
        self.heard = asyncio.Event()
        self._waiting_for = waiting_for

    def roster_changed(self, roster: Roster) -> None:
        self.rosters.append(roster)

    def signal_received(self, sender: bytes, data: dict[str, Any]) -> None:
        self.signals.append((sender, data))
        if self._waiting_for is None or data == self._waiting_for:
            self.heard.set()

    def relay_received(self, sender: bytes, frame: bytes) -> None:
        pass


class LocalSignals:
    """Relays signals between nodes in this process; `rewrite` may alter or drop them."""

    def __init__(self) -> None:
        self.nodes: dict[bytes, Mesh] = {}
        self.rewrite: Rewrite | None = None

    def sender(self, key: bytes) -> _BoundSender:
        return _BoundSender(self, key)

    def relay(self, sender: bytes, to: bytes, data: dict[str, Any]) -> None:
        if self.rewrite is not None:
            changed = self.rewrite(sender, to, data)
            if changed is None:
                return
            data = changed
        target = self.nodes.get(to)
        if target is not None:
            # Deliver on a later loop turn, as a websocket would.
            asyncio.get_running_loop().call_soon(target.handle_signal, sender, data)


@dataclass
class _BoundSender:
    bus: LocalSignals
    key: bytes

    def send_signal(self, to: bytes, data: dict[str, Any]) -> None:
        self.bus.relay(self.key, to, data)


@dataclass
class Node:
    mesh: Mesh
    signing_key: SigningKey
    events: list[Event] = field(default_factory=list)

    @property
    def key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def replica(self) -> Replica:
        return self.mesh.replica

    def digest(self) -> bytes:
        return self.mesh.replica.state.digest()

    def changed_bytes(self) -> int:
        return sum(1 for e in self.events if isinstance(e, BytesChanged))


def make_node(
    signals: Any,
    *,
    signing_key: SigningKey | None = None,
    room_key: bytes | None = None,
    mesh_key: SigningKey | None = None,
    regions: tuple[Region, ...] = REGIONS,
    water_marks: tuple[int, int] = (LOW_WATER, HIGH_WATER),
    wall: Callable[[], float] = time.time,
) -> Node:
    """A node; `mesh_key` lets a test sign with another key than the one signalling knows;
    `wall` is its time of day (a test may step it; timers run on the monotonic clock)."""
    key = signing_key if signing_key is not None else SigningKey.generate()
    signer = mesh_key if mesh_key is not None else key
    replica = Replica(
        signing_key=signer,
        room=ROOM,
        regions=regions,
        session=random.getrandbits(63),
    )
    events: list[Event] = []
    bound = signals.sender(bytes(key.verify_key)) if isinstance(signals, LocalSignals) else signals
    core = MeshCore(
        replica=replica, nonces=os.urandom, now=time.monotonic(), room_key=room_key, water_marks=water_marks
    )
    links = WebRTCLinks(local_key=replica.key, signals=bound, ice=LOOPBACK, low_water=water_marks[0])
    mesh = Mesh(core, links=links, signals=bound, on_event=events.append, wall=wall)
    node = Node(mesh, key, events)
    if isinstance(signals, LocalSignals):
        signals.nodes[node.key] = mesh
    return node


@contextlib.asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[None]:
    """Run the nodes' meshes for the duration of the block, then stop them."""
    async with asyncio.TaskGroup() as tasks:
        for node in nodes:
            tasks.create_task(node.mesh.run())
        for node in nodes:
            await node.mesh.wait_running()
        try:
            yield
        finally:
            for node in nodes:
                node.mesh.stop()


def random_changes(rng: random.Random, count: int) -> list[tuple[int, bytes]]:
    changes = []
    for _ in range(count):
        region = rng.choice(REGIONS)
        address = rng.randint(region.start, region.end)
        length = rng.randint(1, min(8, region.end - address + 1))
        changes.append((address, rng.randbytes(length)))
    return changes


async def wait_all(nodes: list[Node], condition: Callable[[Node], bool], within: float) -> None:
    async with asyncio.timeout(within):
        for node in nodes:
            await node.mesh.wait_until(lambda node=node: condition(node))  # type: ignore[misc]


async def wait_converged(nodes: list[Node], within: float) -> None:
    """Until every node has the same digest (re-checked whenever any mesh changes)."""

    def same() -> bool:
        return len({n.digest() for n in nodes}) == 1

    async with asyncio.timeout(within):
        while not same():
            waiters = [asyncio.ensure_future(n.mesh.wait_until(same)) for n in nodes]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()


class Rendezvous:
    """The real rendezvous app on 127.0.0.1; can be stopped and started again on its port."""

    def __init__(self, games: Path) -> None:
        self.config = config_for(games)
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        self.runner = web.AppRunner(create_app(self.config), shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@contextlib.asynccontextmanager
async def rendezvous(tmp_path: Path) -> AsyncIterator[Rendezvous]:
    server = Rendezvous(make_games(tmp_path / "games"))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
