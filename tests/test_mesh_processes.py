"""Peers as separate processes (`python3 -m peer.mesh.node`), meeting through the real
rendezvous and syncing over real aiortc on loopback; killed and frozen peers."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from peer.core.sync.replica import HEARTBEAT_INTERVAL, SILENT_AFTER
from tests.mesh_support import rendezvous
from tests.switch_support import all_admitted, converged, nodes, write_all

# How late a node may report a loss, beyond the rule's own limit: its event loop wakes for the
# silence timer late on a loaded machine (2 cores shared with other test runs), and the report
# crosses a pipe. The times compared are the test's and the node's wall clocks, on one machine.
REPORT_MARGIN = 1.0
LOOPBACK = ["--loopback"]


async def test_four_processes_converge(tmp_path: Path) -> None:
    async with rendezvous(tmp_path) as server, nodes(server.url, 4, "four", LOOPBACK) as group:
        await all_admitted(group, 3)
        await write_all(group, 30)
        await converged(group)


async def test_killed_peer_detected_within_the_silence_limit_and_others_keep_syncing(
    tmp_path: Path,
) -> None:
    async with rendezvous(tmp_path) as server, nodes(server.url, 3, "kill", LOOPBACK) as group:
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
    async with rendezvous(tmp_path) as server, nodes(server.url, 2, "freeze", LOOPBACK) as group:
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
