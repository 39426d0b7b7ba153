"""Who hosts next when the hosting peer is gone: one rule every peer applies the same way.

The rendezvous lists members in join order, each with the standby URL where it would host. When
both the rendezvous and the host are gone, every peer picks the earliest joiner that is not the
gone host, is still connected to it (or is itself) and offered a standby URL. Peers that see the
same roster and the same survivors pick the same successor without talking about it. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar


class Candidate(Protocol):
    @property
    def key(self) -> bytes: ...

    @property
    def standby(self) -> str | None: ...


C = TypeVar("C", bound=Candidate)


def successor(
    members: Sequence[C], *, gone_host: bytes | None, me: bytes, connected: Iterable[bytes]
) -> C | None:
    """The member that takes over hosting, or None when nobody should (the host is not gone)."""
    alive = set(connected) | {me}
    if gone_host is None or gone_host in alive:
        return None
    for member in members:
        if member.key != gone_host and member.key in alive and member.standby:
            return member
    return None
