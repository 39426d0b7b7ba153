#!/usr/bin/env python3
"""An honest pair's write latency while a third member floods, beside quiet, in one run (issue 18).

Three in-process peers on real aiortc over loopback, one room with a 16 KiB shared region. C
writes one byte per 60 Hz frame; the latency is the time until A's replica holds it. Modes:
- quiet: nobody else sends;
- heavy: the member sends valid signed 16 KiB batches at 39 a second (F2's attack, inside the old
  240-messages-a-second budget), each one charged by its bytes now;
- heavy_paced: the same batches at 6.5 a second, just inside the byte budget (never cut);
- chat: the member sends 200 chat lines a second (F3);
- resync: the member asks A for its full state 50 times a second (F5);
- digest: the member sends A 50 digests a second claiming `max_lamport=0`, each a request for
  everything (issue 30, F1);
- slots: the member sends 380 counter writes a second, each under a fresh session, so each one
  would open a new counter slot on every peer (issue 30, F3); the JSON line also gives the slots
  A holds afterwards.
Each flood's figures also give what the victim A spent on the member (issue 30, F1's "before"
was 41 MB sent and RSS growth): the bytes A sent it, the most bytes A's link to it held waiting
(sampled every 10 ms), and how much the process's resident memory grew (Linux; all three peers
run in this process). Prints one human line per mode and a final JSON line. Goal: every flood's
p50 within 1.2x of quiet (issue 30: p99 within 1.5x). Traffic stays on loopback; the flooder runs in the same
process, so its own sending costs the honest pair CPU too (the figure is therefore pessimistic).
`bench_flood.py [MODE ...]` runs quiet and the modes named (default: all).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from games.definition import Merge, MergeRule, Region  # noqa: E402
from peer.core.sync import codec  # noqa: E402
from peer.core.sync.clock import wall_ms  # noqa: E402
from tests.mesh_support import LocalSignals, Node, make_node, running, wait_all  # noqa: E402

COUNTER = 0xE010
REGIONS = (
    Region(0x8000, 0xBFFF),
    Region(0xE000, 0xE00F),
    Region(COUNTER, COUNTER + 1, Merge(MergeRule.ADD, 2)),
)
PROBE = 0xE000
SAMPLES = 120
MODES = ("quiet", "heavy", "heavy_paced", "chat", "resync", "digest", "slots")


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
        self.session = member.replica.session  # (the slot flood signs under a new one each time)
        self.stop = False

    def send(self, body: codec.Body) -> None:
        link = self.member.mesh.link(self.victim.key)
        if link is None or link.buffered_amount > 4_000_000:
            return
        message = codec.encode(
            body,
            signing_key=self.member.signing_key,
            room=self.member.replica.room,
            session=self.session,
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


def slots(flooder: Flooder) -> Callable[[int], codec.Body]:
    """A counter write adding nothing visible (a total of 0), under a session never seen before:
    a receiver keys a counter's slots by (author, session), and the session is the sender's word."""
    member = flooder.member

    def body(n: int) -> codec.Body:
        flooder.session = random.getrandbits(63)
        batch = codec.sign_batch(
            member.signing_key,
            room=member.replica.room,
            session=flooder.session,
            lamport=wall_ms(time.time()),
            runs=(),
            totals=((COUNTER, 0),),
        )
        return codec.WriteBatch.of(batch)

    return body


async def measure(a: Node, c: Node, flooder: Flooder, mode: str, first: int) -> list[float]:
    floods: dict[str, tuple[float, Callable[[int], codec.Body]]] = {
        "heavy": (39.0, heavy(flooder.member)),
        "heavy_paced": (6.5, heavy(flooder.member)),
        "chat": (200.0, lambda n: codec.Chat(f"spam {n}")),
        "resync": (50.0, lambda n: codec.ResyncRequest()),
        "digest": (50.0, lambda n: codec.Digest(os.urandom(codec.DIGEST_SIZE), 0)),
        "slots": (380.0, slots(flooder)),
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
        flooder.session = flooder.member.replica.session


class Victim:
    """What A spends on the member while a mode runs: bytes sent, peak bytes waiting, RSS growth."""

    def __init__(self, victim: Node, member: Node) -> None:
        self.victim, self.member = victim, member
        self.sent_before = self._sent()
        self.rss_before = rss_kib()
        self.peak_waiting = 0
        self._task = asyncio.ensure_future(self._sample())

    def _sent(self) -> int:
        peer = self.victim.replica.statistics().peers.get(self.member.key)
        return peer.bytes_sent if peer is not None else 0

    async def _sample(self) -> None:
        while True:
            link = self.victim.mesh.link(self.member.key)
            if link is not None:
                self.peak_waiting = max(self.peak_waiting, link.buffered_amount)
            await asyncio.sleep(0.01)

    async def figures(self) -> dict[str, int | None]:
        self._task.cancel()
        rss = rss_kib()
        return {
            "victim_bytes_sent": self._sent() - self.sent_before,
            "victim_peak_waiting_bytes": self.peak_waiting,
            "rss_growth_kib": None if rss is None or self.rss_before is None else rss - self.rss_before,
        }


def rss_kib() -> int | None:
    """The process's resident memory (Linux's /proc), None elsewhere."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 2),
    }


def refusals(victim: Node, member: Node) -> Counter[str]:
    """What VICTIM has refused of MEMBER so far, by reason."""
    peer = victim.replica.statistics().peers.get(member.key)
    return Counter(peer.rejections) if peer is not None else Counter()


async def main(modes: tuple[str, ...] = MODES) -> dict[str, object]:
    signals = LocalSignals()
    a, member, c = (make_node(signals, regions=REGIONS) for _ in range(3))
    nodes = [a, member, c]
    figures: dict[str, object] = {}
    async with running(*nodes):
        for node in nodes:
            node.mesh.set_roster([n.key for n in nodes])
        await wait_all(nodes, lambda n: len(n.mesh.admitted()) == 2, within=20)
        flooder = Flooder(member, a)
        for number, mode in enumerate(modes):
            cuts_before = a.mesh.statistics()[member.key].cuts
            refused_before = refusals(a, member)
            spent = Victim(a, member)
            figure: dict[str, object] = dict(summary(await measure(a, c, flooder, mode, number * SAMPLES)))
            figure.update(await spent.figures())
            figure["member_cut"] = a.mesh.statistics()[member.key].cuts > cuts_before
            refused = refusals(a, member) - refused_before
            figure["refused"] = dict(refused)
            if mode == "slots":
                figure["slots_on_victim"] = len(a.replica.state.slots[COUNTER])
            figures[mode] = figure
            print(
                f"{mode:>11}: honest latency p50 {figure['p50_ms']} ms, p99 {figure['p99_ms']} ms"
                f"{', flooder cut' if figure['member_cut'] else ''}"
                + "".join(f", {count} refused as {why}" for why, count in sorted(refused.items()))
                + (f", {figure['slots_on_victim']} counter slots on A" if mode == "slots" else "")
                + f"; A sent the member {figure['victim_bytes_sent']} B, at most"
                f" {figure['victim_peak_waiting_bytes']} B waiting, RSS +{figure['rss_growth_kib']} KiB",
                flush=True,
            )
            if number < len(modes) - 1:
                await wait_all([a], lambda n: member.key in n.mesh.admitted(), within=60)
    quiet = figures["quiet"]
    assert isinstance(quiet, dict)
    for mode in modes[1:]:
        flood = figures[mode]
        assert isinstance(flood, dict)
        flood["p50_vs_quiet"] = round(flood["p50_ms"] / quiet["p50_ms"], 2)
        flood["p99_vs_quiet"] = round(flood["p99_ms"] / quiet["p99_ms"], 2)
    return figures


def chosen_modes(argv: list[str]) -> tuple[str, ...]:
    unknown = set(argv) - set(MODES)
    if unknown:
        raise SystemExit(f"unknown mode(s) {', '.join(sorted(unknown))}; modes: {', '.join(MODES)}")
    return ("quiet", *(mode for mode in MODES[1:] if mode in argv)) if argv else MODES


if __name__ == "__main__":
    result = asyncio.run(main(chosen_modes(sys.argv[1:])))
    print(json.dumps(result))
