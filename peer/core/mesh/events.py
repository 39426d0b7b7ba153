"""What the mesh tells the application: its events and its per-peer statistics.

Owns the events the mesh adds to the replica's (`peer.core.sync.replica.Event`): a peer admitted or
refused, our own changes published, a link lost, a peer reached another way; and `LinkStatistics`,
the mesh's counters per peer connection next to the replica's `PeerStatistics`, and
`status_line`, their one-line summary. Plain data: the mesh core (`peer.core.mesh.core`) produces
them, the session and the tools read them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from peer.core.mesh.dial import DialState
from peer.core.mesh.paths import Path
from peer.core.sync.replica import Event, PeerStatistics
from peer.core.sync.state import Delta, Run


@dataclass(frozen=True, slots=True)
class PeerAdmitted(Event):
    peer: bytes


@dataclass(frozen=True, slots=True)
class PeerRefused(Event):
    peer: bytes
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Published(Event):
    """Our own changes went out (merged into the replica and sent to every admitted peer).

    `corrections` (bytes) and `deltas` (counters) are what the emulator must be given so that it
    shows the room's merge of them (see `replica.LocalOutcome`)."""

    runs: tuple[Run, ...]
    corrections: tuple[Run, ...] = ()
    deltas: tuple[Delta, ...] = ()


@dataclass(frozen=True, slots=True)
class LinkLost(Event):
    peer: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class PathChanged(Event):
    """An admitted peer is now reached another way (e.g. relayed, then direct)."""

    peer: bytes
    path: Path


@dataclass(slots=True)
class LinkStatistics:
    """Per peer connection: the mesh's counters next to the replica's `PeerStatistics`."""

    state: str = DialState.WAITING.value
    admissions: int = 0
    reconnects: int = 0
    links_lost: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    cuts: int = 0
    pauses: int = 0
    unsendable: int = 0  # messages dropped because the channel was not open (resynced later)
    offers_held: int = 0  # offers that came while our link with the peer was alive (see `MeshCore._answer`)
    last_loss: str = ""
    path: Path | None = None  # of the current link, once ICE chose one
    relay_refusals: Counter[str] = field(default_factory=Counter)  # frames refused on the relay
    relayed: int = 0  # relay sessions admitted
    moved_to_direct: int = 0  # relayed, then a direct link took over
    sync: PeerStatistics | None = None


SYNCED = (DialState.ADMITTED.value, "relayed")  # states in which a peer is synced (`peer.state_name`)


def status_line(report: Mapping[bytes, LinkStatistics]) -> str:
    """One line for a status display: how many peers are synced, then each one's state, path,
    RTT and traffic (`report`: the mesh's statistics, by peer key)."""
    parts = []
    for key, stats in sorted(report.items()):
        part = f"{key.hex()[:6]} {stats.state}"
        part += f" {stats.path.value}" if stats.path is not None else ""
        sync = stats.sync
        if sync is not None and stats.state in SYNCED:
            rtt = "?" if sync.rtt is None else f"{sync.rtt * 1000:.1f}ms"
            part += f" rtt {rtt} out {sync.shared_bytes_sent}B in {sync.shared_bytes_received}B"
            rejected = sum(sync.rejections.values())
            part += f" rejected {rejected}" if rejected else ""
        part += f" lost {stats.links_lost}" if stats.links_lost else ""
        parts.append(part)
    synced = sum(stats.state in SYNCED for stats in report.values())
    return f"{synced}/{len(report)} peers" + (": " if parts else "") + "; ".join(parts)
