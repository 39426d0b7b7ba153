#!/usr/bin/env python3
"""Benchmark of the peer mesh transport, without emulators.

Runs the real rendezvous in this process (127.0.0.1 only) and 2, 4 and 8 peers as separate
processes (`python3 -m peer.mesh.node --loopback`), all in one room. Each peer publishes one batch
per 60 Hz frame carrying its wall-clock time stamp; every other peer records the one-way latency
when the stamp arrives (same machine, same clock). Reports latency p50/p99 and CPU per peer
process. Then the burst test: with 4 peers, each calls `local_changes` 100 times per frame
(100x the normal rate, each call with one more random byte) for 2 s; the mesh must keep every
link up with bounded latency (it coalesces and paces batches, and keeps bufferedAmount bounded).

Prints one human line per run and a final JSON line. Goal: 4 peers p99 < 5 ms at < 20 % of a
core each. Traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rendezvous.app import Config, create_app  # noqa: E402

GAME = "bench.rom\n#! title Mesh benchmark\nc000 c0ff stamps and noise\n"


@dataclass
class Peer:
    process: asyncio.subprocess.Process

    async def ask(self, event: str, **order: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write((json.dumps(order) + "\n").encode())
        await self.process.stdin.drain()
        return await self.expect(event)

    async def expect(self, event: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"a peer exited before {event!r}")
            message: dict[str, Any] = json.loads(line)
            if message["event"] == event:
                return message


async def serve(games: Path) -> tuple[web.AppRunner, str]:
    config = Config(games=[games], rate=1000.0, burst=1000)
    runner = web.AppRunner(create_app(config), shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def start_peers(url: str, count: int, room: str) -> list[Peer]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    peers = []
    for slot in range(count):
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "peer.mesh.node", "--rendezvous", url, "--game", "bench"),
            *("--room", room, "--slot", str(slot), "--loopback"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        peers.append(Peer(process))
    async with asyncio.timeout(60):
        for peer in peers:
            await peer.expect("ready")
        await asyncio.gather(*(p.ask("admitted_all", cmd="wait_admitted", count=count - 1) for p in peers))
    return peers


async def stop_peers(peers: list[Peer]) -> None:
    for peer in peers:
        if peer.process.returncode is None:
            peer.process.kill()
        await peer.process.wait()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(url: str, count: int, seconds: float, per_frame: int, noise: int) -> dict[str, Any]:
    peers = await start_peers(url, count, f"bench-{count}-{per_frame}")
    try:
        await asyncio.gather(*(p.ask("digest", cmd="digest") for p in peers))  # warm
        order = {"cmd": "bench", "seconds": seconds, "per_frame": per_frame, "noise": noise}
        async with asyncio.timeout(seconds + 60):
            reports = await asyncio.gather(*(p.ask("bench", **order) for p in peers))
    finally:
        await stop_peers(peers)
    latencies = [x for r in reports for x in r["latencies_ms"]]
    frames = round(seconds * 60)
    cpus = [r["cpu"] for r in reports]
    return {
        "peers": count,
        "seconds": seconds,
        "calls_per_frame": per_frame,
        "samples": len(latencies),
        "expected_samples": frames * count * (count - 1),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(max(latencies, default=float("nan")), 3),
        "cpu_per_peer_mean": round(statistics.fmean(cpus), 3),
        "cpu_per_peer_max": round(max(cpus), 3),
        "messages_sent_per_peer_s": round(statistics.fmean(r["messages_sent_per_s"] for r in reports), 1),
        "links_lost": sum(r["links_lost"] for r in reports),
        "pauses": sum(r["pauses"] for r in reports),
        "rejections": sum(r["rejections"] for r in reports),
    }


def human(result: dict[str, Any]) -> str:
    kind = "burst x100" if result["calls_per_frame"] > 1 else "60 Hz"
    return (
        f"{result['peers']} peers {kind}: one-way p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms, "
        f"CPU/peer {result['cpu_per_peer_mean']:.0%} (max {result['cpu_per_peer_max']:.0%}), "
        f"{result['samples']}/{result['expected_samples']} stamps, "
        f"{result['messages_sent_per_peer_s']} msg/s/peer, links lost {result['links_lost']}"
    )


async def main_async(options: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        games = Path(folder)
        (games / "bench.regions").write_text(GAME, encoding="utf-8")
        runner, url = await serve(games)
        try:
            runs = []
            for count in options.peers:
                result = await run(url, count, options.seconds, 1, 0)
                print(human(result), flush=True)
                runs.append(result)
            burst = await run(url, options.burst_peers, 2.0, 100, 1)
            print(human(burst), flush=True)
        finally:
            await runner.cleanup()
    four = next((r for r in runs if r["peers"] == 4), None)
    goal = None
    if four is not None:
        goal = four["p99_ms"] < 5.0 and four["cpu_per_peer_max"] < 0.20
    return {
        "benchmark": "mesh",
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "burst": burst,
        "goal_4_peers_p99_under_5ms_cpu_under_20pct": goal,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--seconds", type=float, default=5.0, help="per run (default 5)")
    parser.add_argument("--burst-peers", type=int, default=4)
    options = parser.parse_args()
    result = asyncio.run(main_async(options))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
