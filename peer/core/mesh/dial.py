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
    WAITING, CONNECTING, BINDING ──relay──▶ RELAY_BINDING ──relay admitted──▶ RELAYED
    RELAY_BINDING, RELAYED ──admitted (a direct link)──▶ ADMITTED;  ──relay lost──▶ WAITING

- WAITING: no link; at `retry_at` the offerer dials and the answerer asks the offerer to (the
  "restart" signal). Each failure doubles the wait, up to `RETRY_MAX`.
- CONNECTING / BINDING: a link is being negotiated, then proving identities; past the deadline
  (`CONNECT_TIMEOUT` after it started) it is given up and counts as lost.
- BANNED: the peer was refused or cut; no link with it, offers and restarts ignored, until then.
- RELAY_BINDING / RELAYED: no direct link came up within `RELAY_AFTER` seconds, so the peers bind
  (then talk) through the rendezvous's relay (`peer.core.mesh.relay`); the offerer starts it
  (`StartRelay`), the answerer follows when the offerer's relay nonce arrives. Meanwhile direct
  attempts go on in the background, as in WAITING / CONNECTING (dial, give up, wait, at most
  `RELAYED_RETRY_MAX` apart): one that is admitted takes over (ADMITTED) and the relay is dropped.

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
RELAY_AFTER = CONNECT_TIMEOUT + 1.0  # unreached this long (one whole direct attempt): relay
RELAYED_RETRY_MAX = 10.0  # while relayed, a direct attempt at least this often
HELD_OFFER_TTL = 10.0  # a held offer is answered if the live link is lost within this


class DialState(enum.Enum):
    WAITING = "waiting"
    CONNECTING = "connecting"
    BINDING = "binding"
    ADMITTED = "admitted"
    BANNED = "banned"
    RELAY_BINDING = "relay-binding"
    RELAYED = "relayed"


class Input(enum.Enum):
    DIAL = "dial"  # offerer: a new link of ours (any previous one was dropped)
    OFFERED = "offered"  # answerer: a new link from the peer's offer
    OPENED = "opened"  # the link's channel is open: binding starts
    ADMITTED = "admitted"  # the binding verified
    LOST = "lost"  # the link closed, failed, went silent or was given up
    BANNED = "banned"  # refused or cut
    UNBANNED = "unbanned"  # the ban is over
    RELAY = "relay"  # a relay session starts (ours, or the offerer's nonce arrived)
    RELAY_ADMITTED = "relay-admitted"  # its binding verified
    RELAY_LOST = "relay-lost"  # it went silent, was refused, or the rendezvous went away


_LINKED = (DialState.CONNECTING, DialState.BINDING, DialState.ADMITTED)  # a link exists
_UNREACHED = (DialState.WAITING, DialState.CONNECTING, DialState.BINDING)  # no admitted link
RELAYING = (DialState.RELAY_BINDING, DialState.RELAYED)
_RELAYING = RELAYING
_DIRECT_ATTEMPT = (Input.DIAL, Input.OFFERED, Input.OPENED, Input.LOST)
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
    **{(state, Input.RELAY): DialState.RELAY_BINDING for state in _UNREACHED},
    (DialState.RELAY_BINDING, Input.RELAY): DialState.RELAY_BINDING,  # the offerer started over
    (DialState.RELAY_BINDING, Input.RELAY_ADMITTED): DialState.RELAYED,
    # direct attempts go on beside the relay, without changing its state ...
    **{(state, what): state for state in _RELAYING for what in _DIRECT_ATTEMPT},
    # ... until one is admitted: the direct link takes over
    **{(state, Input.ADMITTED): DialState.ADMITTED for state in _RELAYING},
    **{(state, Input.RELAY_LOST): DialState.WAITING for state in _RELAYING},
    **{(state, Input.BANNED): DialState.BANNED for state in _RELAYING},
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


@dataclass(frozen=True, slots=True)
class StartRelay:
    """Offerer: start a relay session through the rendezvous (send our relay nonce)."""


Action = Dial | AskRedial | GiveUp | StartRelay


@dataclass(frozen=True, slots=True)
class HeldOffer:
    """An offer that came while our link was alive: answer it if that link is lost soon."""

    link_id: int
    sdp: str
    at: float


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
        self.unreached_since: float | None = now  # no admitted link (direct or relayed) since
        self.held: HeldOffer | None = None  # answerer: an offer held while our link was alive

    @property
    def relaying(self) -> bool:
        return self.state in RELAYING

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
        self.unreached_since = None

    def lost(self, now: float) -> HeldOffer | None:
        """The direct link (or attempt) is lost; while relayed the relay carries on. Returns the
        offer held while it was alive, if it came within `HELD_OFFER_TTL`: answer it now."""
        if self.state is DialState.ADMITTED:
            self.unreached_since = now
        self._move(Input.LOST)
        self.deadline = None
        self._retry_after(now)
        held, self.held = self.held, None
        return held if held is not None and now - held.at < HELD_OFFER_TTL else None

    def relay(self) -> None:
        self._move(Input.RELAY)

    def relay_admitted(self, now: float) -> None:
        self._move(Input.RELAY_ADMITTED)
        if self.deadline is None:  # no direct attempt in flight: the next one in the background
            self._retry_after(now)

    def relay_lost(self, now: float) -> None:
        self._move(Input.RELAY_LOST)
        self.unreached_since = now
        self.deadline = None
        self.backoff = RETRY_FIRST
        self._retry_after(now)

    def banned(self, now: float, wait: float) -> None:
        self._move(Input.BANNED)
        self.deadline, self.retry_at = None, now + wait
        self.held = None

    def may_answer(self) -> bool:
        """Whether an offer from the peer is taken (not while it is banned)."""
        return self.state is not DialState.BANNED

    def may_follow_relay(self) -> bool:
        """Answerer: whether the offerer's relay nonce starts a relay session now: only while no
        link is admitted (in RELAY_BINDING the offerer started over)."""
        return self.state in _UNREACHED or self.state is DialState.RELAY_BINDING

    # ---- what to do ------------------------------------------------------------------------

    def get_timer(self, relay: bool = False) -> float | None:
        """`relay`: whether a relay session may be started (both the rendezvous and we allow it)."""
        times = [self.deadline if self.deadline is not None else self.retry_at]
        due = self._relay_due()
        if relay and due is not None:
            times.append(due)
        return min((t for t in times if t is not None), default=None)

    def _relay_due(self) -> float | None:
        if not self.offerer or self.state not in _UNREACHED or self.unreached_since is None:
            return None
        return self.unreached_since + RELAY_AFTER

    def handle_timer(self, now: float, relay: bool = False) -> Action | None:
        if self.state is DialState.BANNED and self.retry_at is not None and now >= self.retry_at:
            self._move(Input.UNBANNED)
            self.backoff = RETRY_FIRST
        due = self._relay_due()
        if relay and due is not None and now >= due:
            return StartRelay()
        if self.deadline is not None and now >= self.deadline:
            return GiveUp(f"not admitted within {CONNECT_TIMEOUT:g} s")
        idle = self.state is DialState.WAITING or (self.relaying and self.deadline is None)
        if not idle or self.retry_at is None or now < self.retry_at:
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
        connecting = self.state is DialState.CONNECTING or (self.relaying and self.deadline is not None)
        stale = connecting and now - self._started_at >= HINT_GRACE
        idle = self.state is DialState.WAITING or (self.relaying and self.deadline is None)
        if idle or self.link_id <= link_id or stale:
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
        self.backoff = min(RELAYED_RETRY_MAX if self.relaying else RETRY_MAX, self.backoff * 2)
