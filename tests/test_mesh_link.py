"""Two peers on real aiortc over loopback, signalling relayed in process."""

from __future__ import annotations

import asyncio
import contextlib
import random

from games.definition import Region
from peer.core.mesh.events import PeerAdmitted, status_line
from peer.core.sync.replica import SILENT_AFTER, BytesChanged
from peer.mesh.webrtc import MAX_MESSAGE, PeerLink
from tests.mesh_support import (
    LocalSignals,
    make_node,
    random_changes,
    running,
    wait_all,
    wait_converged,
)


async def test_two_peers_bind_and_converge() -> None:
    signals = LocalSignals()
    a, b = make_node(signals), make_node(signals)
    rng = random.Random(1)
    async with running(a, b):
        for node in (a, b):
            node.mesh.set_roster([a.key, b.key])
        await wait_all([a, b], lambda n: len(n.mesh.admitted()) == 1, within=10)
        for _ in range(30):
            a.mesh.local_changes(random_changes(rng, 3))
            b.mesh.local_changes(random_changes(rng, 3))
        await wait_converged([a, b], within=10)
        stats = a.mesh.statistics()[b.key]
        assert stats.admissions == 1 and not stats.refusals
        assert stats.sync is not None and stats.sync.shared_bytes_sent > 0
        line = status_line(a.mesh.statistics())
        assert line.startswith("1/1 peers: ") and "admitted direct rtt" in line  # (on loopback: host to host)
    assert a.digest() == b.digest()
    assert any(isinstance(e, PeerAdmitted) for e in a.events)
    assert any(isinstance(e, BytesChanged) for e in b.events)


async def test_four_peers_converge_after_concurrent_writes() -> None:
    signals = LocalSignals()
    nodes = [make_node(signals) for _ in range(4)]
    rng = random.Random(4)
    async with running(*nodes):
        for node in nodes:
            node.mesh.set_roster([n.key for n in nodes])
        await wait_all(nodes, lambda n: len(n.mesh.admitted()) == 3, within=15)
        for _ in range(20):
            for node in nodes:
                node.mesh.local_changes(random_changes(rng, 4))
            await asyncio.sleep(0)  # let the links carry this frame, as a 60 Hz loop would
        await wait_converged(nodes, within=15)
        for node in nodes:
            for stats in node.mesh.statistics().values():
                assert stats.admissions == 1 and stats.links_lost == 0
    assert len({n.digest() for n in nodes}) == 1


async def test_channel_closed_mid_stream_reconnects_and_resyncs() -> None:
    signals = LocalSignals()
    a, b = make_node(signals), make_node(signals)
    rng = random.Random(7)
    async with running(a, b):
        for node in (a, b):
            node.mesh.set_roster([a.key, b.key])
        await wait_all([a, b], lambda n: len(n.mesh.admitted()) == 1, within=10)
        for frame in range(60):
            a.mesh.local_changes(random_changes(rng, 3))
            b.mesh.local_changes(random_changes(rng, 3))
            if frame == 20:
                link = a.mesh.link(b.key)
                assert link is not None
                await link.close()  # the channel dies under load, as aiortc's can
            await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await a.mesh.wait_until(lambda: a.mesh.statistics()[b.key].admissions == 2)
        await wait_converged([a, b], within=10)
        assert a.mesh.statistics()[b.key].admissions == 2
        assert b.mesh.statistics()[a.key].links_lost == 1
    assert a.digest() == b.digest()


async def test_backed_up_channel_pauses_and_coalesces_without_loss() -> None:
    # Frames far bigger than a game's (24 KiB in short runs, ~36 KiB on the wire) as fast as
    # the mesh publishes, against low water marks: the channel's buffer fills, and the replica
    # must coalesce while the peer is paused.
    low, high = 4 * 1024, 16 * 1024
    big = (Region(0x0000, 0xBFFF),)
    signals = LocalSignals()
    a, b = (make_node(signals, regions=big, water_marks=(low, high)) for _ in range(2))
    rng = random.Random(5)
    most_buffered = 0
    async with running(a, b):
        for node in (a, b):
            node.mesh.set_roster([a.key, b.key])
        await wait_all([a, b], lambda n: len(n.mesh.admitted()) == 1, within=10)
        link = a.mesh.link(b.key)
        assert link is not None
        for _ in range(40):
            a.mesh.local_changes([(at, rng.randbytes(8)) for at in range(0, 0xC000, 16)])
            most_buffered = max(most_buffered, link.buffered_amount)
            await asyncio.sleep(1 / 240)
        await wait_converged([a, b], within=20)
        stats = a.mesh.statistics()[b.key]
        assert stats.pauses >= 1 and stats.links_lost == 0
    # Above the high mark only what was already decided goes out: the batch that crossed it and,
    # on resuming, one coalesced patch of the dirty bytes (at most the 48 KiB region, ~70 KiB
    # as stamped entries). So the buffer stays within a few messages of the mark.
    assert most_buffered < high + 4 * MAX_MESSAGE


async def test_a_cancelled_mesh_still_closes_its_links() -> None:
    """Cancelled (the session's TaskGroup failing elsewhere), the mesh closes its peer
    connections on the way out; closes spawned into its own ending group never ran."""
    signals = LocalSignals()
    a, b = make_node(signals), make_node(signals)
    async with running(b):
        a_run = asyncio.create_task(a.mesh.run())
        await a.mesh.wait_running()
        for node in (a, b):
            node.mesh.set_roster([a.key, b.key])
        await wait_all([a, b], lambda n: len(n.mesh.admitted()) == 1, within=10)
        link = a.mesh.link(b.key)
        assert link is not None
        a_run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await a_run
        assert isinstance(link, PeerLink) and link._pc.connectionState == "closed"
        # b hears the close (SCTP goes away) well before a silent link would be given up.
        await wait_all([b], lambda n: not n.mesh.admitted(), within=SILENT_AFTER - 1)
