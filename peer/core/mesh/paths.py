"""Which way a peer's link goes, in a player's words: directly, through TURN, or through the server.

ICE picks one pair of candidates per link; their types (RFC 8445: host, srflx, prflx, relay) say
the path. A relay candidate on either side means every packet goes through a TURN server; any other
pair is a direct path (on the same network, or through both routers after hole punching). A peer
reached through the rendezvous's own relay (`peer.core.mesh.relay`, the last resort) is RELAYED. Pure.
"""

from __future__ import annotations

from enum import Enum

CANDIDATE_TYPES = frozenset({"host", "srflx", "prflx", "relay"})


class Path(Enum):
    DIRECT = "direct"
    TURN = "via TURN"
    RELAYED = "relayed by the server"


def classify(local_type: str, remote_type: str) -> Path:
    """The path of a nominated candidate pair; unknown types are refused (ValueError)."""
    for kind in (local_type, remote_type):
        if kind not in CANDIDATE_TYPES:
            raise ValueError(f"unknown ICE candidate type {kind!r}")
    return Path.TURN if "relay" in (local_type, remote_type) else Path.DIRECT
