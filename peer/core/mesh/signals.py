"""The signals peers relay through the rendezvous to set up a link: Offer, Answer, Restart.

What the rendezvous relays is JSON from another member, so it is parsed and checked once, here, at
the edge: `parse_signal` returns a valid signal or raises `SignalError`, and nothing past it sees a
dict. A signal that cannot be valid cannot be constructed (h11's events are the model). Pure: no
I/O, no network imports.

On the wire each is a JSON object: {"kind": "offer" | "answer", "link": ID, "sdp": TEXT} or
{"kind": "restart", "link": ID}. `link` names the offerer's attempt, so stale signals are told
from current ones; in a restart it is the last attempt the answerer had (0: none yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

MAX_SDP = 16 * 1024
MAX_LINK_ID = 2**53  # JSON numbers stay exact below this


class SignalError(ValueError):
    """A relayed signal that is not one of ours (malformed, oversized, unknown kind)."""


def _check_link(link: object, *, allow_zero: bool = False) -> None:
    lowest = 0 if allow_zero else 1
    if not isinstance(link, int) or isinstance(link, bool) or not lowest <= link < MAX_LINK_ID:
        raise SignalError(f"not a valid link id: {link!r}")


def _check_sdp(sdp: object) -> None:
    if not isinstance(sdp, str) or not sdp or len(sdp) > MAX_SDP:
        raise SignalError("no usable session description")


@dataclass(frozen=True, slots=True)
class _Description:
    """A session description for link `link` (an offer or its answer)."""

    link: int
    sdp: str
    KIND: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _check_link(self.link)
        _check_sdp(self.sdp)

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.KIND, "link": self.link, "sdp": self.sdp}


@dataclass(frozen=True, slots=True)
class Offer(_Description):
    KIND: ClassVar[str] = "offer"


@dataclass(frozen=True, slots=True)
class Answer(_Description):
    KIND: ClassVar[str] = "answer"


@dataclass(frozen=True, slots=True)
class Restart:
    """The answerer has no link with us; `link` is the last it had (0: none)."""

    link: int

    def __post_init__(self) -> None:
        _check_link(self.link, allow_zero=True)

    def to_wire(self) -> dict[str, Any]:
        return {"kind": "restart", "link": self.link}


Signal = Offer | Answer | Restart


def parse_signal(data: object) -> Signal:
    """The signal a peer sent, or SignalError."""
    if not isinstance(data, dict):
        raise SignalError("a signal is a JSON object")
    kind, link = data.get("kind"), data.get("link")
    match kind:
        case "offer":
            return Offer(link, data.get("sdp"))  # type: ignore[arg-type]  # checked in __post_init__
        case "answer":
            return Answer(link, data.get("sdp"))  # type: ignore[arg-type]
        case "restart":
            return Restart(link)  # type: ignore[arg-type]
        case _:
            raise SignalError(f"unknown signal kind {str(kind)[:20]!r}")
