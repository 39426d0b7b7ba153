"""A transport-only peer: the mesh without an emulator, driven by JSON lines (tests, benchmark).

    python3 -m peer.mesh.node --rendezvous http://127.0.0.1:4567 --game demo --room r1 --slot 0

It joins the room like a player, takes the shared regions from the rendezvous' game definition,
and then obeys one JSON command per stdin line, answering and reporting on stdout, one JSON
object per line:

    {"cmd": "wait_admitted", "count": 2}        -> {"event": "admitted_all", "count": 2}
    {"cmd": "write", "frames": 30, "seed": 1}   -> {"event": "written"}   (one batch per 60 Hz frame)
    {"cmd": "digest"}                           -> {"event": "digest", "digest": HEX, "admitted": N}
    {"cmd": "wait_path", "path": "direct"}      -> {"event": "path", "path": "direct"}  (every peer's)
    {"cmd": "stats"}  -> {"event": "stats", "paths": [...], "relay_refusals": {...}, "rejections": {...},
                          "moved_to_direct": N, "links_lost": N, "shared_bytes_received": N}
    {"cmd": "bench", "seconds": 5, "per_frame": 1, "noise": 0}
        -> {"event": "bench", "latencies_ms": [...], "cpu": FRACTION, "links_lost": N, ...}
       (`per_frame` calls of local_changes per frame, each with the time stamp and `noise`
       random bytes elsewhere: per_frame=100 is the burst test)
    {"cmd": "quit"}
Unprompted: {"event": "ready", "key": HEX}, {"event": "lost", "peer": HEX, "reason": ...}.

For the benchmark each node writes its wall-clock time (microseconds, 8 bytes) into its own slot
of the first region every frame; receivers read a slot when it changes and record the one-way
latency (all processes share the machine's clock).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from typing import Any

import aiohttp
from nacl.signing import SigningKey

from games.definition import Region
from peer.core.mesh.events import LinkLost
from peer.core.sync.replica import BytesChanged, Event
from peer.mesh.mesh import Mesh
from peer.mesh.room import RoomConfig, RoomSession
from peer.mesh.signalling import SignallingRefused
from peer.mesh.webrtc import IceOptions

FRAME = 1 / 60
SLOT = 8


class Node:
    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.mesh: Mesh | None = None
        self.base = 0
        self.latencies: list[float] = []
        self.recording = False
        self.links_lost = 0

    def on_event(self, event: Event) -> None:
        match event:
            case BytesChanged(_, changes) if self.recording and self.mesh is not None:
                self._record(self.mesh, changes, time.time())
            case LinkLost(peer, reason):
                self.links_lost += 1
                emit(event="lost", peer=peer.hex(), reason=reason, t=time.time())

    def _record(self, mesh: Mesh, changes: tuple[tuple[int, bytes], ...], now: float) -> None:
        slots = {(address - self.base) // SLOT for address, data in changes}
        slots |= {(address + len(data) - 1 - self.base) // SLOT for address, data in changes}
        for slot in slots:
            if 0 <= slot < 8 and slot != self.slot:
                stamp = mesh.replica.state.read(self.base + slot * SLOT, SLOT)
                sent = int.from_bytes(stamp, "big") / 1e6
                if 0 < now - sent < 60:
                    self.latencies.append((now - sent) * 1000)

    def stamp(self) -> tuple[int, bytes]:
        return self.base + self.slot * SLOT, int(time.time() * 1e6).to_bytes(SLOT, "big")


def emit(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def fetch_regions(url: str, game: str) -> list[Region]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/games/{game}") as reply:
        reply.raise_for_status()
        detail = await reply.json()
    return [Region(r["start"], r["end"]) for r in detail["definition"]["regions"]]


async def frames(mesh: Mesh, count: int, per_frame: int, make: Any) -> None:
    """`count` frames at 60 Hz, each with `per_frame` calls of local_changes."""
    start = time.monotonic()
    for frame in range(count):
        for _ in range(per_frame):
            mesh.local_changes(make())
        await asyncio.sleep(max(0.0, start + (frame + 1) * FRAME - time.monotonic()))


async def command(node: Node, mesh: Mesh, order: dict[str, Any]) -> bool:
    match order.get("cmd"):
        case "wait_admitted":
            count = int(order["count"])
            await mesh.wait_until(lambda: len(mesh.admitted()) >= count)
            paths = sorted({s.path.value for s in mesh.statistics().values() if s.path is not None})
            emit(event="admitted_all", count=count, paths=paths)
        case "write":
            rng = random.Random(order.get("seed", 0))
            region = mesh.replica.state.layout
            addresses = [a for a in range(0x10000) if region.check_run(a, 1)]

            def change() -> list[tuple[int, bytes]]:
                return [(rng.choice(addresses), bytes([rng.randrange(256)])) for _ in range(4)]

            await frames(mesh, int(order["frames"]), 1, change)
            emit(event="written")
        case "digest":
            digest = mesh.replica.state.digest().hex()
            emit(event="digest", digest=digest, admitted=len(mesh.admitted()))
        case "wait_path":
            path = str(order["path"])

            def on_path() -> bool:
                stats = mesh.statistics().values()
                return bool(stats) and all(s.path is not None and s.path.value == path for s in stats)

            await mesh.wait_until(on_path)
            emit(event="path", path=path)
        case "stats":
            stats = mesh.statistics().values()
            rejections: dict[str, int] = {}
            for s in stats:
                for reason, count in (s.sync.rejections if s.sync else {}).items():
                    rejections[reason] = rejections.get(reason, 0) + count
            emit(
                event="stats",
                paths=sorted({s.path.value for s in stats if s.path is not None}),
                relay_refusals=dict(mesh.core.relay_refusals),
                rejections=rejections,
                moved_to_direct=sum(s.moved_to_direct for s in stats),
                links_lost=sum(s.links_lost for s in stats),
                shared_bytes_received=sum(s.sync.shared_bytes_received for s in stats if s.sync),
            )
        case "bench":
            per_frame, noise = int(order.get("per_frame", 1)), int(order.get("noise", 0))
            await bench(node, mesh, float(order["seconds"]), per_frame, noise)
        case "quit":
            return False
        case other:
            emit(event="error", message=f"unknown command {other!r}")
    return True


async def bench(node: Node, mesh: Mesh, seconds: float, per_frame: int, noise: int) -> None:
    rng = random.Random(node.slot)
    # Noise goes to the region's bytes after the eight time-stamp slots.
    layout = mesh.replica.state.layout
    spare = [a for a in range(node.base + 8 * SLOT, 0x10000) if layout.check_run(a, 1)]

    def change() -> list[tuple[int, bytes]]:
        extra = [(rng.choice(spare), bytes([rng.randrange(256)])) for _ in range(noise)]
        return [node.stamp(), *extra]

    node.latencies.clear()
    lost_before = node.links_lost
    before = {k: (s.sync.messages_sent if s.sync else 0) for k, s in mesh.statistics().items()}
    node.recording = True
    # Emulators do not start their frames in step: give each node its own phase in the frame,
    # so the benchmark does not measure an artificial pile-up of every peer at one instant.
    await asyncio.sleep(node.slot * FRAME / 8)
    cpu, wall = time.process_time(), time.monotonic()
    await frames(mesh, round(seconds / FRAME), per_frame, change)
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    node.recording = False
    stats = mesh.statistics()
    sent = sum((s.sync.messages_sent if s.sync else 0) - before.get(k, 0) for k, s in stats.items())
    emit(
        event="bench",
        latencies_ms=[round(x, 3) for x in node.latencies],
        cpu=cpu / wall,
        links_lost=node.links_lost - lost_before,
        messages_sent_per_s=sent / wall,
        pauses=sum(s.pauses for s in stats.values()),
        rejections=sum(sum(s.sync.rejections.values()) for s in stats.values() if s.sync),
    )


async def read_commands(node: Node, mesh: Mesh) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        try:
            order = json.loads(line)
        except ValueError:
            emit(event="error", message="not JSON")
            continue
        if not isinstance(order, dict) or not await command(node, mesh, order):
            break


async def main_async(options: argparse.Namespace) -> None:
    regions = await fetch_regions(options.rendezvous, options.game)
    node = Node(options.slot)
    node.base = regions[0].start
    config = RoomConfig(
        rendezvous=options.rendezvous,
        signing_key=SigningKey.generate(),
        name=f"node{options.slot}",
        game=options.game,
        regions=tuple(regions),
        room=options.room,
        password=options.password,
        ice=IceOptions(
            stun=tuple(options.stun),
            turn=options.turn,
            turn_user=options.turn_user,
            turn_password=options.turn_password,
            host_addresses=("127.0.0.1",) if options.loopback else None,
            use_rendezvous=options.rendezvous_ice,
        ),
        relay=options.relay,
    )
    session = RoomSession(config, on_event=node.on_event)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(session.run())
        mesh = await session.wait_ready()
        node.mesh = mesh
        emit(event="ready", key=mesh.key.hex())
        await read_commands(node, mesh)
        session.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m peer.mesh.node", description=__doc__)
    parser.add_argument("--rendezvous", required=True, metavar="URL")
    parser.add_argument("--game", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--password")
    parser.add_argument("--slot", type=int, default=0, choices=range(8))
    parser.add_argument(
        "--loopback", action="store_true", help="offer 127.0.0.1 host candidates (one machine)"
    )
    parser.add_argument("--stun", action="append", default=[], metavar="URL", help="STUN server")
    parser.add_argument("--turn", metavar="URL", help="TURN server")
    parser.add_argument("--turn-user", metavar="U")
    parser.add_argument("--turn-password", metavar="P")
    parser.add_argument("--no-rendezvous-ice", dest="rendezvous_ice", action="store_false")
    parser.add_argument("--no-relay", dest="relay", action="store_false")
    parser.add_argument("--log-level", default="warning")
    options = parser.parse_args(argv)
    logging.basicConfig(level=options.log_level.upper(), stream=sys.stderr)
    problems: list[str] = []
    try:
        asyncio.run(main_async(options))
    except* SignallingRefused as group:
        problems.append(f"the rendezvous refused us: {group.exceptions[0]}")
    except* (aiohttp.ClientError, OSError) as group:
        problems.append(f"cannot reach the rendezvous: {group.exceptions[0]}")
    for problem in problems:
        emit(event="error", message=problem)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
