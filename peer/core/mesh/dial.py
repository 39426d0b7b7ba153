"""The direct path to one peer: when to connect, when to give up, when to try again.

Owns, for one roster member, the life of our direct (WebRTC) links with it as an explicit state
machine (h11's `_state.py` is the model): an Enum of states, a table of the transitions that
exist, and an error for any other (a bug of ours, never the peer's: the mesh core only reports
what happened). Time comes in as `now`, on a monotonic clock. It does no I/O. The relay through
the rendezvous is the other path, with a machine of its own (`peer.core.mesh.relay_path`); the
mesh core (`peer.core.mesh.core`) runs both side by side and tells this one when the relay
carries the peer (`relay_carries`: direct attempts go on in the background, less often) and when
it stops (`relay_gone`: try again now).

    WAITING ──dial / offered──▶ CONNECTING ──opened──▶ BINDING ──admitted──▶ ADMITTED
       ▲                          │  ▲                   │                     │
       └──────── lost ◀───────────┴──┴── dial / offered ─┴─────────────────────┘
    BINDING, ADMITTED ──banned──▶ BANNED ──(timer: ban over)──▶ WAITING

- WAITING: no link; at `retry_at` the offerer dials and the answerer asks the offerer to (the
  "restart" signal). Each failure doubles the wait, up to `RETRY_MAX` (`RELAYED_RETRY_MAX` while
  the relay carries the peer).
- CONNECTING / BINDING: a link is being negotiated, then proving identities; past the deadline
  (`CONNECT_TIMEOUT` after it started) it is given up and counts as lost.
- BANNED: the peer was refused or cut; no link with it (nor a relay session), offers and
  restarts ignored, until then.

Coming back fast: a dead path makes the waits grow, and the path's return is not seen by a link
that no longer exists. So every sign that the peer is reachable again is a `hint`: the
rendezvous listing it (our signalling came back, or it rejoined), or a signal from it. A hint
makes a waiting peer due at once with the first wait, and gives up an attempt that has gone
`HINT_GRACE` seconds without opening (its offer or answer was most likely lost with the path).
A "restart" from the answerer is such a sign too, and says it has no link: an older attempt of
ours is redialled at once.

Held offers (issue 18): an offer relayed by the rendezvous proves nothing, so while our admitted
link is alive the answerer holds it (`hold_offer`) instead of answering; if that link is lost
within `HELD_OFFER_TTL` seconds, `lost` hands it back to be answered (a peer that really restarted
goes silent or closes its link). A newer offer taken, or a ban, forgets it.
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
RELAYED_RETRY_MAX = 10.0  # while relayed, a direct attempt at least this often
HELD_OFFER_TTL = 10.0  # a held offer is answered if the live link is lost within this


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


LINKED = (DialState.CONNECTING, DialState.BINDING, DialState.ADMITTED)  # a link exists
UNREACHED = (DialState.WAITING, DialState.CONNECTING, DialState.BINDING)  # no admitted link
TRANSITIONS: dict[tuple[DialState, Input], DialState] = {
    (DialState.WAITING, Input.DIAL): DialState.CONNECTING,
    (DialState.WAITING, Input.OFFERED): DialState.CONNECTING,
    # a new attempt supersedes the current link, whatever it had reached
    **{(state, Input.DIAL): DialState.CONNECTING for state in LINKED},
    **{(state, Input.OFFERED): DialState.CONNECTING for state in LINKED},
    (DialState.CONNECTING, Input.OPENED): DialState.BINDING,
    (DialState.BINDING, Input.ADMITTED): DialState.ADMITTED,
    **{(state, Input.LOST): DialState.WAITING for state in LINKED},
    # refused (binding), cut (admitted), or cut while the relay carried the peer (any other)
    **{(state, Input.BANNED): DialState.BANNED for state in (*UNREACHED, DialState.ADMITTED)},
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


@dataclass(frozen=True, slots=True)
class HeldOffer:
    """An offer that came while our link was alive: answer it if that link is lost soon."""

    link_id: int
    sdp: str
    at: float


class DialMachine:
    """The direct path to one peer; `offerer` says which side of every link with it we are."""

    def __init__(self, *, offerer: bool, now: float) -> None:
        self.offerer = offerer
        self.state = DialState.WAITING
        self.link_id = 0  # the current link's, or (while waiting) the last one's
        self.backoff = RETRY_FIRST
        self.retry_max = RETRY_MAX  # RELAYED_RETRY_MAX while the relay carries the peer
        self.retry_at: float | None = now if offerer else None  # an answerer waits to be dialled
        self.deadline: float | None = None
        self._started_at = now
        self.held: HeldOffer | None = None  # answerer: an offer held while our link was alive

    @property
    def unreached(self) -> bool:
        """No admitted direct link, and not banned: the relay may carry the peer."""
        return self.state in UNREACHED

    # ---- what happened ---------------------------------------------------------------------

    def dial(self, link_id: int, now: float) -> None:
        self._start(Input.DIAL, link_id, now)

    def offered(self, link_id: int, now: float) -> None:
        self._start(Input.OFFERED, link_id, now)
        self.held = None  # a newer offer, taken: the held one is stale

    def hold_offer(self, link_id: int, sdp: str, now: float) -> None:
        """Answerer: an offer came while our admitted link is alive; hold it (the newest only)."""
        if self.offerer or self.state is not DialState.ADMITTED:
            raise DialError(f"an offer held in state {self.state.value}")
        self.held = HeldOffer(link_id, sdp, now)

    def opened(self) -> None:
        self._move(Input.OPENED)

    def admitted(self) -> None:
        self._move(Input.ADMITTED)
        self.deadline, self.backoff, self.retry_at = None, RETRY_FIRST, None

    def lost(self, now: float) -> HeldOffer | None:
        """The link (or attempt) is lost. Returns the offer held while it was alive, if it came
        within `HELD_OFFER_TTL`: answer it now."""
        self._move(Input.LOST)
        self.deadline = None
        self._retry_after(now)
        held, self.held = self.held, None
        return held if held is not None and now - held.at < HELD_OFFER_TTL else None

    def banned(self, now: float, wait: float) -> None:
        self._move(Input.BANNED)
        self.deadline, self.retry_at = None, now + wait
        self.held = None

    def relay_carries(self, now: float) -> None:
        """The relay carries the peer: direct attempts go on in the background, less often."""
        self.retry_max = RELAYED_RETRY_MAX
        if self.state is DialState.WAITING:
            self._retry_after(now)

    def relay_gone(self, now: float) -> None:
        """The relay no longer carries the peer: a waiting peer is tried again at once."""
        self.retry_max = RETRY_MAX
        self.backoff = min(self.backoff, RETRY_MAX)
        if self.state is DialState.WAITING:
            self.backoff = RETRY_FIRST
            self._retry_after(now)

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
        self.backoff = min(self.retry_max, self.backoff * 2)
