"""Peers as separate processes (`python3 -m peer.mesh.node`), meeting through the real
rendezvous and syncing over real aiortc on loopback; killed and frozen peers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from peer.core.replica import HEARTBEAT_INTERVAL, SILENT_AFTER
from tests.mesh_support import rendezvous

ROOT = Path(__file__).resolve().parent.parent
# How late a node may report a loss, beyond the rule's own limit: its event loop wakes for the
# silence timer late on a loaded machine (2 cores shared with other test runs), and the report
# crosses a pipe. The times compared are the test's and the node's wall clocks, on one machine.
REPORT_MARGIN = 1.0


class NodeProcess:
    """One node process; commands on stdin, JSON events from stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lost: list[dict[str, Any]] = []
        self.key = ""

    async def send(self, **order: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(order) + "\n").encode())
        await self.process.stdin.drain()

    async def expect(self, event: str) -> dict[str, Any]:
        """The next `event` line; "lost" lines met on the way are kept in `self.lost`."""
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                raise EOFError(f"node exited (code {self.process.returncode}) before {event!r}")
            message: dict[str, Any] = json.loads(line)
            if message["event"] == "lost":
                self.lost.append(message)
            if message["event"] == event:
                return message

    async def ask(self, event: str, **order: Any) -> dict[str, Any]:
        await self.send(**order)
        return await self.expect(event)


@asynccontextmanager
async def nodes(url: str, count: int, room: str) -> AsyncIterator[list[NodeProcess]]:
    started = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        for slot in range(count):
            process = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "peer.mesh.node", "--rendezvous", url),
                *("--game", "demo", "--room", room, "--slot", str(slot), "--loopback"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                cwd=ROOT,
                env=env,
            )
            started.append(NodeProcess(process))
        async with asyncio.timeout(20):
            for node in started:
                node.key = (await node.expect("ready"))["key"]
        yield started
    finally:
        for node in started:
            if node.process.returncode is None:
                node.process.kill()
            await node.process.wait()


async def all_admitted(group: list[NodeProcess], count: int) -> None:
    async with asyncio.timeout(20):
        await asyncio.gather(*(n.ask("admitted_all", cmd="wait_admitted", count=count) for n in group))


async def converged(group: list[NodeProcess]) -> str:
    """Until every node reports the same digest; each round is a real request to every node."""
    async with asyncio.timeout(20):
        while True:
            replies = await asyncio.gather(*(n.ask("digest", cmd="digest") for n in group))
            digests: set[str] = {reply["digest"] for reply in replies}
            if len(digests) == 1:
                return digests.pop()
            # The nodes have no change event to subscribe to across a pipe: ask again shortly.
            await asyncio.sleep(0.1)


async def write_all(group: list[NodeProcess], frames: int) -> None:
    await asyncio.gather(*(n.ask("written", cmd="write", frames=frames, seed=i) for i, n in enumerate(group)))


async def test_four_processes_converge(tmp_path: Path) -> None:
    async with rendezvous(tmp_path) as server, nodes(server.url, 4, "four") as group:
        await all_admitted(group, 3)
        await write_all(group, 30)
        await converged(group)


async def test_killed_peer_detected_within_the_silence_limit_and_others_keep_syncing(
    tmp_path: Path,
) -> None:
    async with rendezvous(tmp_path) as server, nodes(server.url, 3, "kill") as group:
        await all_admitted(group, 2)
        victim, survivors = group[2], group[:2]
        killed_at = time.time()
        victim.process.send_signal(signal.SIGKILL)
        # Survivors keep writing; each reports losing the victim on the way.
        await write_all(survivors, 30)
        async with asyncio.timeout(2 * SILENT_AFTER):
            for node in survivors:
                while not any(lost["peer"] == victim.key for lost in node.lost):
                    await node.ask("digest", cmd="digest")
        for node in survivors:
            lost = next(lost for lost in node.lost if lost["peer"] == victim.key)
            # Heard from until it died: lost at most SILENT_AFTER later (sooner if its link closes).
            assert lost["t"] - killed_at < SILENT_AFTER + REPORT_MARGIN, lost
        await converged(survivors)


async def test_frozen_peer_declared_silent_then_reestablished(tmp_path: Path) -> None:
    # SIGSTOP keeps the frozen peer's sockets open, so the rendezvous sees nothing: only the
    # mesh's own heartbeat can tell, SILENT_AFTER after it last heard the peer. After SIGCONT the
    # link comes back and resyncs.
    async with rendezvous(tmp_path) as server, nodes(server.url, 2, "freeze") as group:
        await all_admitted(group, 1)
        frozen, awake = group
        stopped_at = time.time()
        frozen.process.send_signal(signal.SIGSTOP)
        try:
            async with asyncio.timeout(2 * SILENT_AFTER):
                lost = await awake.expect("lost")
            assert lost["reason"] == "silent", lost
            # Last heard at most a heartbeat before the freeze and at most at the freeze: the
            # silence rule, not something else, declared it, and on time.
            silent_for = lost["t"] - stopped_at
            earliest = SILENT_AFTER - HEARTBEAT_INTERVAL - REPORT_MARGIN
            assert earliest < silent_for < SILENT_AFTER + REPORT_MARGIN, lost
            await write_all([awake], 10)  # changes made while the peer is away
        finally:
            frozen.process.send_signal(signal.SIGCONT)
        await all_admitted(group, 1)
        await converged(group)
