"""Issue 18 with real players: a member floods the room with chat while an honest player writes;
the honest write still reaches the third player's emulator at once (real peer processes, real
headless openMSX, real aiortc on loopback; see tests/peer_harness.py)."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from tests.peer_harness import Peer, Peers
from tests.test_peer_e2e import start_room

pytestmark = [
    pytest.mark.openmsx,
    pytest.mark.timeout(180),
]

ITEM1 = 0xE011
FLOOD = 300


async def write_latencies(writer: Peer, reader: Peer, values: range) -> list[float]:
    """Seconds from a write in the writer's emulator to the value in the reader's."""
    found = []
    for value in values:
        started = time.monotonic()
        await writer.write(ITEM1, value)
        await reader.wait_byte(ITEM1, value, within=10)
        found.append(time.monotonic() - started)
    return found


async def test_a_chat_flood_neither_delays_writes_into_openmsx_nor_fills_the_screen(peers: Peers) -> None:
    alice, bob, mallory = await start_room(peers, ["alice", "bob", "mallory"], tty=True)
    quiet = await write_latencies(bob, alice, range(0x40, 0x45))

    async def flood() -> None:
        for n in range(FLOOD):
            mallory.type(f"say spam {n}")
            await asyncio.sleep(1 / 200)  # 200 lines a second, as in the issue

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(flood())
        await asyncio.sleep(0.5)  # the flood is under way
        flooded = await write_latencies(bob, alice, range(0x50, 0x58))
    shown = [m for m in await alice.shown() if m.startswith("mallory (") and "says: spam" in m]
    print(
        f"write into openMSX: quiet p50 {statistics.median(quiet) * 1000:.0f} ms, "
        f"under a {FLOOD}-line chat flood p50 {statistics.median(flooded) * 1000:.0f} ms, "
        f"max {max(flooded) * 1000:.0f} ms; {len(shown)} spam lines on alice's screen"
    )
    # Before: 1.3-1.7 s late and 2,325 lines on screen. The harness polls every 50 ms.
    assert max(flooded) < 0.5, flooded
    assert len(shown) <= 20, len(shown)
