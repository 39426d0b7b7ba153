#!/usr/bin/env python3
"""Benchmark of the three paths between players (issue 13): direct, via TURN, relayed by the server.

Part 1, on the namespace internet of `tests.netns` (real NAT routers, the rendezvous and coturn
on the public host; needs root, iptables and coturn): three pairs of transport-only mesh nodes
(`peer.mesh.node`, the real mesh without openMSX: emulators are too heavy for 2 cores), one
after the other in one run: two cone routers (direct, hole punched with the rendezvous's STUN),
two symmetric routers with coturn (via TURN), two symmetric routers without any ICE server
(`--no-rendezvous-ice`: only the rendezvous's relay joins them). Each node writes its wall-clock
stamp once per 60 Hz frame; the other records the one-way latency (one machine, one clock), as
`bench_mesh.py` and `bench_e2e.py` do. The path each pair used is checked, not assumed.

Part 2, on loopback: the rendezvous (a process of its own) relaying for N pairs (default 50) of
light clients speaking the rendezvous protocol, each from an address of its own (127.0.1.K), each
sending its partner a 160-byte frame 60 times a second (a sealed write batch per frame). Reports
the rendezvous's CPU (share of one core) and resident memory, and what it relayed.

Prints human lines, then one final JSON line. Traffic stays in the namespaces it creates and on
loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from nacl.signing import SigningKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rendezvous import wire  # noqa: E402
from tests import netns  # noqa: E402
from tests.internet_support import (  # noqa: E402
    Program,
    programs,
    start_coturn,
    start_nodes,
    start_rendezvous,
)

FRAME = 1 / 60
GAME = "bench.rom\n#! title Paths benchmark\nc000 c0ff stamps\n"  # as bench_mesh.py's
RELAY_FRAME = 160
LINK_TIMEOUT = 60.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# ---- part 1: latency per path on the namespace internet ----------------------------------------


async def measure_pair(
    net: netns.Internet, nats: tuple[str, str], room: str, extra: list[str], seconds: float
) -> dict[str, Any]:
    a, b = (net.add_player(nat) for nat in nats)
    async with programs() as started:
        nodes = await start_nodes(net, (a, b), room, started, [*extra, "--game", "bench"])
        began = time.monotonic()
        for node in nodes:
            await node.send(cmd="wait_admitted", count=1)
        paths = [(await node.expect("admitted_all", LINK_TIMEOUT))["paths"] for node in nodes]
        linked = time.monotonic() - began
        for node in nodes:
            await node.send(cmd="bench", seconds=seconds)
        results = [await node.expect("bench", seconds + 30) for node in nodes]
    latencies = [x for r in results for x in r["latencies_ms"]]
    return {
        "path": sorted({p for ps in paths for p in ps}),
        "linked_s": round(linked, 2),
        "samples": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 2) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 2) if latencies else None,
        "node_cpu": round(max(r["cpu"] for r in results), 3),
        "links_lost": sum(r["links_lost"] for r in results),
    }


async def part_one(seconds: float) -> dict[str, Any]:
    net = netns.Internet()
    folder = Path(tempfile.mkdtemp(prefix="bench-paths-"))
    try:
        async with programs() as started:
            started.append(await start_coturn(net, folder))
            games = folder / "games"  # a game whose region holds every node's time stamp
            games.mkdir()
            (games / "bench.regions").write_text(GAME, encoding="utf-8")
            started.append(await start_rendezvous(net, folder, turn=True, extra=["--games", str(games)]))
            cases = {
                "direct": (("cone", "cone"), []),
                "turn": (("symmetric", "symmetric"), []),
                "relayed": (("symmetric", "symmetric"), ["--no-rendezvous-ice"]),
            }
            report = {}
            for name, (nats, extra) in cases.items():
                report[name] = figures = await measure_pair(net, nats, name, extra, seconds)
                print(
                    f"{name:8} path {'/'.join(figures['path'])}: linked in {figures['linked_s']} s, "
                    f"latency p50 {figures['p50_ms']} ms p99 {figures['p99_ms']} ms "
                    f"({figures['samples']} samples), node CPU {figures['node_cpu']:.0%}, "
                    f"links lost {figures['links_lost']}",
                    flush=True,
                )
            return report
    finally:
        net.close()
        shutil.rmtree(folder, ignore_errors=True)


# ---- part 2: the rendezvous relaying for many pairs -------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def light_client(url: str, address: str, room: str) -> tuple[Any, str, SigningKey]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))
    ws = await session.ws_connect(f"{url}/ws")
    signing = SigningKey.generate()
    challenge = json.loads((await ws.receive(timeout=10)).data)
    proof = signing.sign(wire.signed_hello_bytes(bytes.fromhex(challenge["nonce"]))).signature.hex()
    key = bytes(signing.verify_key).hex()
    await ws.send_json(
        {"type": "hello", "version": wire.PROTOCOL_VERSION, "name": address, "key": key, "signature": proof}
    )
    await ws.send_json({"type": "join", "game": "demo", "room": room, "password": None, "capacity": 2})
    while json.loads((await ws.receive(timeout=10)).data)["type"] != "joined":
        pass
    return (session, ws), key, signing


async def pump(
    ws: aiohttp.ClientWebSocketResponse, to: bytes, seconds: float, counts: dict[str, int]
) -> None:
    payload = to + b"\x01" + os.urandom(RELAY_FRAME - 1)
    start = time.monotonic()
    for frame in range(round(seconds / FRAME)):
        await ws.send_bytes(payload)
        counts["sent"] += 1
        await asyncio.sleep(max(0.0, start + (frame + 1) * FRAME - time.monotonic()))


async def drain(ws: aiohttp.ClientWebSocketResponse, counts: dict[str, int]) -> None:
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            counts["received"] += 1


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def part_two(pairs: int, seconds: float) -> dict[str, Any]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "rendezvous.cli",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--stun-port",
        "0",
    ]
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, which `Program.stop` ends
    )
    server = Program("rendezvous", process)
    try:
        await server.wait_line("listening on")
        url = f"http://127.0.0.1:{port}"
        idle_rss = rss_mib(process.pid)
        clients = []
        for pair in range(pairs):
            for side in range(2):
                address = f"127.0.1.{2 * pair + side + 1}"
                clients.append(await light_client(url, address, f"pair-{pair}"))
        counts = {"sent": 0, "received": 0}
        cpu, wall = cpu_seconds(process.pid), time.monotonic()
        async with asyncio.TaskGroup() as tasks:
            drains = [tasks.create_task(drain(ws, counts)) for (_, ws), _, _ in clients]
            pumps = []
            for index, ((_, ws), _, _) in enumerate(clients):
                partner = clients[index ^ 1][1]
                pumps.append(tasks.create_task(pump(ws, bytes.fromhex(partner), seconds, counts)))
            await asyncio.gather(*pumps)
            cpu, wall = cpu_seconds(process.pid) - cpu, time.monotonic() - wall
            busy_rss = rss_mib(process.pid)
            for task in drains:  # (before closing: a close waits for frames a reader would take)
                task.cancel()
        for (session, ws), _, _ in clients:
            await ws.close()
            await session.close()
    finally:
        await server.stop()
    return {
        "pairs": pairs,
        "frames_per_s": round(counts["sent"] / wall),
        "delivered": round(counts["received"] / max(1, counts["sent"]), 4),
        "server_cpu": round(cpu / wall, 3),
        "server_rss_mib": round(busy_rss, 1),
        "server_rss_idle_mib": round(idle_rss, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"nodes": "peer.mesh.node processes (the mesh without openMSX)"}
    why = netns.unavailable() or (None if shutil.which("turnserver") else "needs coturn")
    if why is None and not args.skip_paths:
        report["paths"] = await part_one(args.seconds)
    else:
        print(f"paths: skipped ({why or '--skip-paths'})")
    load = await part_two(args.pairs, args.seconds)
    report["relay_load"] = load
    print(
        f"relaying for {load['pairs']} pairs: {load['frames_per_s']} frames/s of {RELAY_FRAME} B in, "
        f"{load['delivered']:.1%} delivered; rendezvous CPU {load['server_cpu']:.0%} of a core, "
        f"RSS {load['server_rss_mib']} MiB (idle {load['server_rss_idle_mib']} MiB)",
        flush=True,
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="of measuring, per case (default 5)")
    parser.add_argument("--pairs", type=int, default=50, help="relayed pairs of part 2 (default 50)")
    parser.add_argument("--skip-paths", action="store_true", help="only part 2 (no root needed)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
