"""The relay path to one peer: a session through the rendezvous's relay, from start to drain.

The direct path (`peer.core.mesh.dial`) and this one are two machines side by side; neither
knows the other. The mesh core (`peer.core.mesh.core`) starts a relay session when the direct
path has left the peer unreached for `RELAY_AFTER` seconds, and lets a direct link that is
admitted take over (this path then drains what was in flight). Which one carries our messages is
`peer.core.mesh.peer.carrier`, a function of both states.

    OFF ──start──▶ BINDING ──admitted──▶ ADMITTED ──superseded──▶ DRAINING ──drained──▶ OFF
    BINDING ──start──▶ BINDING (the offerer started over);  any ──lost──▶ OFF

The session itself (its binding, sealing, drain deadline) is `peer.core.mesh.relay_session`;
this module keeps which one is current and what state the path is in. Pure.
"""

from __future__ import annotations

import enum

from peer.core.mesh.dial import CONNECT_TIMEOUT
from peer.core.mesh.relay_session import RelaySession

RELAY_AFTER = CONNECT_TIMEOUT + 1.0  # unreached this long (one whole direct attempt): relay


class RelayState(enum.Enum):
    OFF = "off"
    BINDING = "relay-binding"
    ADMITTED = "relayed"
    DRAINING = "draining"


class RelayInput(enum.Enum):
    START = "start"
    ADMITTED = "admitted"
    SUPERSEDED = "superseded"  # a direct link was admitted and carries the peer now
    DRAINED = "drained"
    LOST = "lost"


RELAY_TRANSITIONS: dict[tuple[RelayState, RelayInput], RelayState] = {
    (RelayState.OFF, RelayInput.START): RelayState.BINDING,
    (RelayState.BINDING, RelayInput.START): RelayState.BINDING,
    (RelayState.BINDING, RelayInput.ADMITTED): RelayState.ADMITTED,
    (RelayState.ADMITTED, RelayInput.SUPERSEDED): RelayState.DRAINING,
    (RelayState.DRAINING, RelayInput.DRAINED): RelayState.OFF,
    **{(state, RelayInput.LOST): RelayState.OFF for state in RelayState},
}


class RelayPathError(Exception):
    """An input the current state does not allow: the mesh core's bookkeeping is wrong."""


class RelayPath:
    """The relay path to one peer; `session` is the current relay session (None when OFF)."""

    def __init__(self) -> None:
        self.state = RelayState.OFF
        self.session: RelaySession | None = None

    @property
    def carries(self) -> bool:
        """Whether messages for the peer may go this way (its binding verified, not superseded)."""
        return self.state is RelayState.ADMITTED

    def start(self, session: RelaySession) -> None:
        self._move(RelayInput.START)
        self.session = session

    def admitted(self) -> None:
        self._move(RelayInput.ADMITTED)

    def superseded(self, now: float) -> None:
        """A direct link took over: what is in flight here is still opened for a while."""
        self._move(RelayInput.SUPERSEDED)
        if self.session is not None:
            self.session.drain(now)

    def drained(self) -> None:
        self._move(RelayInput.DRAINED)
        self.session = None

    def lost(self) -> None:
        self._move(RelayInput.LOST)
        self.session = None

    def _move(self, what: RelayInput) -> None:
        target = RELAY_TRANSITIONS.get((self.state, what))
        if target is None:
            raise RelayPathError(f"{what.value} in state {self.state.value}")
        self.state = target
