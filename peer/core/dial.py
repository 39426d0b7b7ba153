"""The dial state of one peer: when to connect, when to give up, when to try again.

Owns, for one roster member, the life of our links with it as an explicit state machine (h11's
`_state.py` is the model): an Enum of states, a table of the transitions that exist, and an error
for any other (a bug of ours, never the peer's: the mesh only reports what happened). Time comes in
as `now`, on a monotonic clock. It does no I/O and imports nothing from the network layer; the mesh
adapter asks it what to do (`handle_timer`, `restart_requested`) and tells it what happened.

    WAITING ──dial / offered──▶ CONNECTING ──opened──▶ BINDING ──admitted──▶ ADMITTED
       ▲                          │  ▲                   │                     │
       └──────── lost ◀───────────┴──┴── dial / offered ─┴─────────────────────┘
    BINDING, ADMITTED ──banned──▶ BANNED ──(timer: ban over)──▶ WAITING

- WAITING: no link; at `retry_at` the offerer dials and the answerer asks the offerer to (the
  "restart" signal). Each failure doubles the wait, up to `RETRY_MAX`.
- CONNECTING / BINDING: a link is being negotiated, then proving identities; past the deadline
  (`CONNECT_TIMEOUT` after it started) it is given up and counts as lost.
- BANNED: the peer was refused or cut; no link with it, offers and restarts ignored, until then.

Coming back fast: a dead path makes the waits grow, and the path's return is not seen by a link
that no longer exists. So every sign that the peer is reachable again is a `hint`: the
rendezvous listing it (our signalling came back, or it rejoined), or a signal from it. A hint
makes a waiting peer due at once with the first wait, and gives up an attempt that has gone
`HINT_GRACE` seconds without opening (its offer or answer was most likely lost with the path).
A "restart" from the answerer is such a sign too, and says it has no link: an older attempt of
ours is redialled at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

RETRY_FIRST = 0.2  # seconds before the first retry; doubles per failure
RETRY_MAX = 5.0
CONNECT_TIMEOUT = 15.0  # a link not admitted by then is given up
HINT_GRACE = 1.0  # an attempt this old that has not opened is given up on a hint
REFUSED_WAIT = 30.0  # a refused peer gets no link before this
CUT_WAIT = 30.0  # nor a peer cut off for flooding


class DialState(enum.Enum):
    WAITING = "waiting"
    CONNECTING = "connecting"
    BINDING = "binding"
    ADMITTED = "admitted"
    BANNED = "banned"


class Input(enum.Enum):
    DIAL = "dial"  # offerer: a new link of ours (any previous one was dropped)
    OFFERED = "offered"  # answerer: a new link from the peer's offer
    OPENED = "opened"  # the link's channel is open: binding starts
    ADMITTED = "admitted"  # the binding verified
    LOST = "lost"  # the link closed, failed, went silent or was given up
    BANNED = "banned"  # refused or cut
    UNBANNED = "unbanned"  # the ban is over


_LINKED = (DialState.CONNECTING, DialState.BINDING, DialState.ADMITTED)  # a link exists
TRANSITIONS: dict[tuple[DialState, Input], DialState] = {
    (DialState.WAITING, Input.DIAL): DialState.CONNECTING,
    (DialState.WAITING, Input.OFFERED): DialState.CONNECTING,
    # a new attempt supersedes the current link, whatever it had reached
    **{(state, Input.DIAL): DialState.CONNECTING for state in _LINKED},
    **{(state, Input.OFFERED): DialState.CONNECTING for state in _LINKED},
    (DialState.CONNECTING, Input.OPENED): DialState.BINDING,
    (DialState.BINDING, Input.ADMITTED): DialState.ADMITTED,
    **{(state, Input.LOST): DialState.WAITING for state in _LINKED},
    (DialState.BINDING, Input.BANNED): DialState.BANNED,  # refused
    (DialState.ADMITTED, Input.BANNED): DialState.BANNED,  # cut
    (DialState.BANNED, Input.UNBANNED): DialState.WAITING,
}


class DialError(Exception):
    """An input the current state does not allow: the adapter's bookkeeping is wrong."""


# ---- what the mesh is asked to do ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dial:
    """Offerer: drop any current link and dial a new one now."""


@dataclass(frozen=True, slots=True)
class AskRedial:
    """Answerer: tell the offerer the link `last_link` is gone (the "restart" signal)."""

    last_link: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Drop the current link (it counts as lost)."""

    reason: str


Action = Dial | AskRedial | GiveUp


class DialMachine:
    """The dial state of one peer; `offerer` says which side of every link with it we are."""

    def __init__(self, *, offerer: bool, now: float) -> None:
        self.offerer = offerer
        self.state = DialState.WAITING
        self.link_id = 0  # the current link's, or (while waiting) the last one's
        self.backoff = RETRY_FIRST
        self.retry_at: float | None = now if offerer else None  # an answerer waits to be dialled
        self.deadline: float | None = None
        self._started_at = now

    # ---- what happened ---------------------------------------------------------------------

    def dial(self, link_id: int, now: float) -> None:
        self._start(Input.DIAL, link_id, now)

    def offered(self, link_id: int, now: float) -> None:
        self._start(Input.OFFERED, link_id, now)

    def opened(self) -> None:
        self._move(Input.OPENED)

    def admitted(self) -> None:
        self._move(Input.ADMITTED)
        self.deadline, self.backoff = None, RETRY_FIRST

    def lost(self, now: float) -> None:
        self._move(Input.LOST)
        self.deadline = None
        self._retry_after(now)

    def banned(self, now: float, wait: float) -> None:
        self._move(Input.BANNED)
        self.deadline, self.retry_at = None, now + wait

    def may_answer(self) -> bool:
        """Whether an offer from the peer is taken (not while it is banned)."""
        return self.state is not DialState.BANNED

    # ---- what to do ------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self.deadline if self.deadline is not None else self.retry_at

    def handle_timer(self, now: float) -> Action | None:
        if self.state is DialState.BANNED and self.retry_at is not None and now >= self.retry_at:
            self._move(Input.UNBANNED)
            self.backoff = RETRY_FIRST
        if self.deadline is not None and now >= self.deadline:
            return GiveUp(f"not admitted within {CONNECT_TIMEOUT:g} s")
        if self.state is not DialState.WAITING or self.retry_at is None or now < self.retry_at:
            return None
        if self.offerer:
            return Dial()
        self._retry_after(now)  # keep asking, less and less often, until the offerer dials
        return AskRedial(self.link_id)

    def hint(self, now: float) -> None:
        """A sign the peer is reachable again (it is listed, or it signalled us)."""
        if self.state is DialState.WAITING:
            self.backoff = RETRY_FIRST
            self.retry_at = now
        elif self.state is DialState.CONNECTING and now - self._started_at >= HINT_GRACE:
            self.backoff = RETRY_FIRST
            self.deadline = now

    def restart_requested(self, link_id: int, now: float) -> Action | None:
        """Offerer: the answerer says it has no link, the last it had being `link_id`."""
        if not self.offerer or self.state is DialState.BANNED:
            return None
        stale = self.state is DialState.CONNECTING and now - self._started_at >= HINT_GRACE
        if self.state is DialState.WAITING or self.link_id <= link_id or stale:
            self.backoff = RETRY_FIRST
            return Dial()
        return None

    # ---- the table -------------------------------------------------------------------------

    def _start(self, what: Input, link_id: int, now: float) -> None:
        if (what is Input.DIAL) != self.offerer:
            raise DialError(f"{what.value} on the {'offering' if self.offerer else 'answering'} side")
        self._move(what)
        self.link_id, self._started_at = link_id, now
        self.retry_at, self.deadline = None, now + CONNECT_TIMEOUT

    def _move(self, what: Input) -> None:
        target = TRANSITIONS.get((self.state, what))
        if target is None:
            raise DialError(f"{what.value} in state {self.state.value}")
        self.state = target

    def _retry_after(self, now: float) -> None:
        self.retry_at = now + self.backoff
        self.backoff = min(RETRY_MAX, self.backoff * 2)
