#!/usr/bin/env python3
"""An honest pair's write latency while a third member floods, beside quiet, in one run (issue 18).

Three in-process peers on real aiortc over loopback, one room with a 16 KiB shared region. C
writes one byte per 60 Hz frame; the latency is the time until A's replica holds it. Modes:
- quiet: nobody else sends;
- heavy: the member sends valid signed 16 KiB batches at 39 a second (F2's attack, inside the old
  240-messages-a-second budget), each one charged by its bytes now;
- heavy_paced: the same batches at 6.5 a second, just inside the byte budget (never cut);
- chat: the member sends 200 chat lines a second (F3);
- resync: the member asks A for its full state 50 times a second (F5).
Prints one human line per mode and a final JSON line. Goal: every flood's p50 within 1.2x of
quiet. Traffic stays on loopback; the flooder runs in the same process, so its own sending costs
the honest pair CPU too (the figure is therefore pessimistic).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from games.definition import Region  # noqa: E402
from peer.core.sync import codec  # noqa: E402
from peer.core.sync.clock import wall_ms  # noqa: E402
from tests.mesh_support import LocalSignals, Node, make_node, running, wait_all  # noqa: E402

REGIONS = (Region(0x8000, 0xBFFF), Region(0xE000, 0xE00F))
PROBE = 0xE000
SAMPLES = 120
MODES = ("quiet", "heavy", "heavy_paced", "chat", "resync")


async def latencies(a: Node, c: Node, first: int) -> list[float]:
    found = []
    for n in range(SAMPLES):
        value = bytes([(first + n) % 256])
        started = time.monotonic()
        c.mesh.local_changes([(PROBE, value)])
        async with asyncio.timeout(10):
            await a.mesh.wait_until(lambda v=value: a.replica.state.read(PROBE) == v)  # type: ignore[misc]
        found.append((time.monotonic() - started) * 1000)
        await asyncio.sleep(1 / 60)  # the next frame
    return found


class Flooder:
    """Sends straight onto its link to A, with its own key and sequence numbers."""

    def __init__(self, member: Node, victim: Node) -> None:
        self.member, self.victim = member, victim
        self.seq = member.replica.statistics().peers[victim.key].messages_sent + 1000
        self.stop = False

    def send(self, body: codec.Body) -> None:
        link = self.member.mesh.link(self.victim.key)
        if link is None or link.buffered_amount > 4_000_000:
            return
        message = codec.encode(
            body,
            signing_key=self.member.signing_key,
            room=self.member.replica.room,
            session=self.member.replica.session,
            seq=self.seq,
        )
        self.seq += 1
        link.send(message)

    async def run(self, per_second: float, body: Callable[[int], codec.Body]) -> None:
        n = 0
        started = time.monotonic()
        while not self.stop:
            n += 1
            self.send(body(n))
            await asyncio.sleep(max(0.0, started + n / per_second - time.monotonic()))


def heavy(member: Node) -> Callable[[int], codec.Body]:
    def body(n: int) -> codec.Body:
        batch = codec.sign_batch(
            member.signing_key,
            room=member.replica.room,
            session=member.replica.session,
            lamport=wall_ms(time.time()),
            runs=((0x8000, bytes([n % 256]) * 16 * 1024),),
            totals=(),
        )
        return codec.WriteBatch.of(batch)

    return body


async def measure(a: Node, c: Node, flooder: Flooder, mode: str, first: int) -> list[float]:
    floods: dict[str, tuple[float, Callable[[int], codec.Body]]] = {
        "heavy": (39.0, heavy(flooder.member)),
        "heavy_paced": (6.5, heavy(flooder.member)),
        "chat": (200.0, lambda n: codec.Chat(f"spam {n}")),
        "resync": (50.0, lambda n: codec.ResyncRequest()),
    }
    if mode == "quiet":
        return await latencies(a, c, first)
    flooder.stop = False
    rate, body = floods[mode]
    task = asyncio.ensure_future(flooder.run(rate, body))
    try:
        await asyncio.sleep(0.5)  # let the flood build up
        return await latencies(a, c, first)
    finally:
        flooder.stop = True
        await task


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 2),
    }


async def main() -> dict[str, object]:
    signals = LocalSignals()
    a, member, c = (make_node(signals, regions=REGIONS) for _ in range(3))
    nodes = [a, member, c]
    figures: dict[str, object] = {}
    async with running(*nodes):
        for node in nodes:
            node.mesh.set_roster([n.key for n in nodes])
        await wait_all(nodes, lambda n: len(n.mesh.admitted()) == 2, within=20)
        flooder = Flooder(member, a)
        for number, mode in enumerate(MODES):
            cuts_before = a.mesh.statistics()[member.key].cuts
            figure: dict[str, object] = dict(summary(await measure(a, c, flooder, mode, number * SAMPLES)))
            figure["member_cut"] = a.mesh.statistics()[member.key].cuts > cuts_before
            figures[mode] = figure
            print(
                f"{mode:>6}: honest latency p50 {figure['p50_ms']} ms, p99 {figure['p99_ms']} ms"
                f"{', flooder cut' if figure['member_cut'] else ''}",
                flush=True,
            )
            await wait_all([a], lambda n: member.key in n.mesh.admitted(), within=60)
    quiet = figures["quiet"]
    assert isinstance(quiet, dict)
    for mode in MODES[1:]:
        flood = figures[mode]
        assert isinstance(flood, dict)
        flood["p50_vs_quiet"] = round(flood["p50_ms"] / quiet["p50_ms"], 2)
    return figures


if __name__ == "__main__":
    result = asyncio.run(main())
    print(json.dumps(result))
