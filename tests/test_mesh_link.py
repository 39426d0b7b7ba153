"""Two peers on real aiortc over loopback, signalling relayed in process."""

from __future__ import annotations

import random

from mesh_support import (
    LocalSignals,
    make_node,
    random_changes,
    running,
    wait_all,
    wait_converged,
)

from peer.core.replica import BytesChanged
from peer.mesh.mesh import PeerAdmitted


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
