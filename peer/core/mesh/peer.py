"""One roster member as the mesh core sees it: its two paths, the binding under way, its counters.

The direct path (`DialMachine`) and the relay path (`RelayPath`) are separate machines; what
the peer is to the rest of the program comes from both:
- `carrier`: which path our messages take (the direct link once admitted, else the relay once
  admitted, else none: the peer is not synced);
- `state_name`: the one word a status line shows ("admitted", "relayed", "relay-binding", ...);
- `relay_due`: when the relay should be tried (the offerer starts it; the peer has been
  unreached `RELAY_AFTER` seconds, on both paths);
- `may_follow_relay`: whether the answerer follows the offerer's relay nonce now.
Pure: plain data and functions of it; the mesh core changes it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from peer.core.mesh.binding import Binding, Role
from peer.core.mesh.dial import LINKED, DialMachine, DialState
from peer.core.mesh.events import LinkStatistics
from peer.core.mesh.relay_path import RELAY_AFTER, RelayPath, RelayState


class Carrier(enum.Enum):
    DIRECT = "direct"
    RELAY = "relay"


def carrier(direct: DialState, relay: RelayState) -> Carrier | None:
    """Which path carries our messages: the direct link wins as soon as it is admitted."""
    if direct is DialState.ADMITTED:
        return Carrier.DIRECT
    if relay is RelayState.ADMITTED:
        return Carrier.RELAY
    return None


def state_name(direct: DialState, relay: RelayState) -> str:
    """The peer's state in one word, as status lines and statistics show it."""
    if relay is RelayState.BINDING and direct is not DialState.ADMITTED:
        return RelayState.BINDING.value
    if carrier(direct, relay) is Carrier.RELAY:
        return RelayState.ADMITTED.value
    return direct.value


@dataclass(slots=True)
class MeshPeer:
    key: bytes
    role: Role
    direct: DialMachine
    unreached_since: float | None  # synced by neither path since (None: synced now)
    relay: RelayPath = field(default_factory=RelayPath)
    binding: Binding | None = None  # the direct link's identity binding, once it opened
    answer_taken: bool = False  # offerer: the current link's answer was applied
    paused: bool = False  # the direct link's buffer is above the high water mark
    stats: LinkStatistics = field(default_factory=LinkStatistics)

    @classmethod
    def new(cls, key: bytes, role: Role, now: float) -> MeshPeer:
        return cls(key, role, DialMachine(offerer=role is Role.OFFERER, now=now), unreached_since=now)

    @property
    def carrier(self) -> Carrier | None:
        return carrier(self.direct.state, self.relay.state)

    @property
    def linked(self) -> bool:
        """Whether a direct link (or attempt) exists: it has `direct.link_id`."""
        return self.direct.state in LINKED

    def is_current(self, link_id: int) -> bool:
        return self.linked and self.direct.link_id == link_id

    def relay_due(self) -> float | None:
        if (
            self.role is not Role.OFFERER
            or not self.direct.unreached
            or self.relay.state is not RelayState.OFF
            or self.unreached_since is None
        ):
            return None
        return self.unreached_since + RELAY_AFTER

    def may_follow_relay(self) -> bool:
        """Answerer: the offerer's relay nonce starts (or restarts) a session only while neither
        path syncs the peer and it is not banned."""
        return self.direct.unreached and self.relay.state in (RelayState.OFF, RelayState.BINDING)
