"""The mesh's statistics in one line (`peer.core.mesh.events.status_line`), from plain data."""

from __future__ import annotations

from collections import Counter

from peer.core.mesh.events import LinkStatistics, status_line
from peer.core.mesh.paths import Path
from peer.core.sync.replica import PeerStatistics


def test_the_status_line_counts_synced_peers_and_says_each_ones_path_and_traffic() -> None:
    relayed = LinkStatistics(
        state="relayed",
        path=Path.RELAYED,
        sync=PeerStatistics(
            rtt=0.0123, shared_bytes_sent=10, shared_bytes_received=20, rejections=Counter(x=2)
        ),
    )
    waiting = LinkStatistics(state="waiting", links_lost=3, sync=PeerStatistics(rtt=0.5))
    admitted = LinkStatistics(state="admitted", path=Path.DIRECT, sync=PeerStatistics())
    report = {b"\xbb" * 32: waiting, b"\xaa" * 32: relayed, b"\xcc" * 32: admitted}
    assert status_line(report) == (
        f"2/3 peers: aaaaaa relayed {Path.RELAYED.value} rtt 12.3ms out 10B in 20B rejected 2; "
        "bbbbbb waiting lost 3; "
        f"cccccc admitted {Path.DIRECT.value} rtt ? out 0B in 0B"
    )
    assert status_line({}) == "0/0 peers"
