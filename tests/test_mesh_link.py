"""Two peers on real aiortc over loopback, signalling relayed in process."""

from __future__ import annotations

import asyncio
import random

from peer.core.replica import BytesChanged
from peer.mesh.mesh import PeerAdmitted
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
    assert a.digest() == b.digest()
    assert any(isinstance(e, PeerAdmitted) for e in a.events)
    assert any(isinstance(e, BytesChanged) for e in b.events)
    stats = a.mesh.statistics()[b.key]
    assert stats.admissions == 1 and not stats.refusals
    assert stats.sync is not None and stats.sync.writes_sent > 0


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
