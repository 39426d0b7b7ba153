"""Issue 31: an older write beat a newer one after a stalled peer came back. Deterministic, in
memory (`tests/mesh_net.py`): three real mesh cores and replicas, one of them stopped.

The case from the crash test: C's process is stopped for 10 s while its emulator plays on. C's
game writes a contested byte; later A writes it too, and B shows A's value. A and B drop C as
silent. C comes back and reads its emulator's backlog at once (more reports than the publishing
burst, so they are coalesced), then is re-admitted. The newer write (A's) must stay everywhere,
and C's emulator must be given it.
"""

from __future__ import annotations

import pytest

from peer.core.mesh.peer import Carrier
from peer.core.sync.replica import BytesChanged
from tests.mesh_net import REGIONS, WALL, MeshNet, NetNode

X = REGIONS[0].start + 0x20  # the contested byte
Y = REGIONS[0].start + 0x40  # bytes only C writes during its stop


def shown(node: NetNode, address: int, after: int = 0) -> list[int]:
    """The values NODE's emulator was given at ADDRESS, in order (from event AFTER on)."""
    return [
        data[address - start]
        for event in node.events[after:]
        if isinstance(event, BytesChanged)
        for start, data in event.changes
        if start <= address < start + len(data)
    ]


@pytest.mark.parametrize("timers_first", [True, False], ids=["silence-first", "backlog-first"])
def test_a_stalled_peers_backlog_does_not_take_back_a_newer_write(timers_first: bool) -> None:
    net = MeshNet(3)
    a, b, c = net.nodes
    net.list_all()
    net.run(1.0)
    assert all(len(node.core.admitted()) == 2 for node in net.nodes)
    net.write(a, X, b"\x01")
    net.run(0.5)

    stop = net.now
    net.stall(c)
    backlog = [(stop + 0.3 + 1.1 * n, Y + n, bytes([n + 1])) for n in range(9)]  # C's game plays on
    backlog.append((stop + 5.0, X, bytes([233])))  # ... and writes the contested byte
    backlog.sort()
    net.run(7.0)  # A and B drop C as silent
    assert c.key not in a.core.admitted() and c.key not in b.core.admitted()
    net.write(a, X, bytes([105]))  # the newest write, 2 s after C's
    net.run(0.5)
    assert b.read(X) == bytes([105])
    seen_before = {node.key: len(node.events) for node in (a, b)}

    net.now = stop + 10.0
    net.resume(c)
    if timers_first:
        net.advance(0.0)
    for written_at, address, data in backlog:  # read at once, each with when the game made it
        net.write(c, address, data, written_at=WALL + written_at)
    net.run(12.0)

    assert all(
        node.core.carrier(other.key) is Carrier.DIRECT
        for node in net.nodes
        for other in net.nodes
        if other is not node
    )
    assert {node.read(X) for node in net.nodes} == {bytes([105])}
    assert 233 not in shown(a, X, seen_before[a.key]) and 233 not in shown(b, X, seen_before[b.key])
    assert shown(c, X)[-1:] == [105]  # C's emulator is given the newer write
    assert {node.digest() for node in net.nodes} == {a.digest()}
    assert c.read(Y + 8) == a.read(Y + 8) == bytes([9])  # C's own later writes are kept
