"""The mesh core: one room's links around one `Replica`, as a machine that does no I/O.

aioquic's shape (`QuicConnection`): every input comes in with the time (`Instant`: the monotonic
clock for timers, the time of day for stamps only), and what must be done goes out as typed
actions, drained with `actions()`, in the order they were decided:
- links: `Dial`, `Answer`, `AcceptAnswer` (apply a description the peer sent), `CloseLink`,
  `Send` on a link;
- the rendezvous: `SendSignal`, `SendRelay` (a frame for its relay);
- the application: `Emit(event)`, a replica event or one of `peer.core.mesh.events`.
One timer: `get_timer()` / `handle_timer(at)`.

The inputs: the roster (`set_roster`), signals (`handle_signal`), what a link reports
(`link_open`, `link_message`, `link_buffered`, `link_drained`, `link_closed`), relay frames
(`handle_relay`), our own changes (`local_changes`), chat, resync, leaving.

Per roster member it keeps a `MeshPeer` (`peer.core.mesh.peer`): the direct path (`DialMachine`)
and the relay path (`RelayPath`) side by side, the direct link's `Binding`, counters. The rules
that live here:
- link bytes go to the binding until the peer is admitted, then to `replica.receive`; a refusal
  the key signed for itself (`BANNED_FOR`) bans it, any other only drops the link;
- an offer never ends a direct link that is alive (`LIVE_LINK`): the dial machine holds it;
- the relay is started by the offerer when the peer is due (`MeshPeer.relay_due`), followed by
  the answerer; a direct link that is admitted takes over and the relay drains, without the
  replica noticing (it keeps its link to the peer; the next message simply goes the other way);
- backpressure: a link whose buffer passes the high water mark pauses the peer in the replica
  (which coalesces), its "drained" report resumes it;
- what goes out is flushed at once after every input (`_flush`), by the path that carries it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from peer.core.mesh import relay_session
from peer.core.mesh.binding import Admitted, Binding, RefusalReason, Refused, Role, role_towards
from peer.core.mesh.dial import CUT_WAIT, REFUSED_WAIT, AskRedial, Dial, DialState, GiveUp
from peer.core.mesh.events import LinkLost, LinkStatistics, PathChanged, PeerAdmitted, PeerRefused, Published
from peer.core.mesh.paths import Path
from peer.core.mesh.peer import Carrier, MeshPeer, state_name
from peer.core.mesh.relay import RelayRefusal
from peer.core.mesh.relay_path import RelayState
from peer.core.mesh.relay_session import Drained, Dropped, Opened, RelaySession, Reply, is_relay_nonce, stray
from peer.core.mesh.signals import Answer, Offer, Restart, SignalError, parse_signal
from peer.core.room.room_game import GameCheck
from peer.core.sync import codec
from peer.core.sync.pacing import PublishPacer
from peer.core.sync.replica import CutPeer, Event, PeerLeft, PeerSilent, Rejected, Replica
from peer.core.sync.state import Delta, Run
from rendezvous.names import fingerprint as _short  # (logs name a key as the screen does)

log = logging.getLogger(__name__)

LIVE_LINK = 2.5  # seconds: heard from this recently, a link is alive and no offer ends it
BANNED_FOR = frozenset({RefusalReason.PASSWORD_MISMATCH})  # refusals the key signed for itself
MAX_MESSAGE = 64 * 1024  # a data channel refuses larger messages (aiortc's limit)
HIGH_WATER = 256 * 1024  # a link's buffered bytes above which the peer is paused
LOW_WATER = 32 * 1024  # a link reports "drained" below this: the peer is resumed
MAX_BUFFERED = 4 * 1024 * 1024  # paused, a link holding this much more does not drain: dropped


@dataclass(frozen=True, slots=True)
class Instant:
    """When an input happens: `mono` (monotonic) runs every timer, so a step of the time of day
    cannot freeze or drop links; `wall` (time of day) is for Lamport stamps and skew only."""

    mono: float
    wall: float


# ---- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DialLink:
    """Offerer: open link `link_id` to `peer` and send it our offer."""

    peer: bytes
    link_id: int


@dataclass(frozen=True, slots=True)
class AnswerOffer:
    """Answerer: open link `link_id` from the peer's offer and send our answer."""

    peer: bytes
    link_id: int
    sdp: str


@dataclass(frozen=True, slots=True)
class AcceptAnswer:
    """Offerer: apply the peer's answer to our link `link_id`."""

    peer: bytes
    link_id: int
    sdp: str


@dataclass(frozen=True, slots=True)
class CloseLink:
    peer: bytes
    link_id: int


@dataclass(frozen=True, slots=True)
class Send:
    """One message on the direct link; report `link_buffered` after it (backpressure)."""

    peer: bytes
    link_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class SendSignal:
    peer: bytes
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SendRelay:
    """A frame for the rendezvous's relay to pass to `peer`."""

    peer: bytes
    frame: bytes


@dataclass(frozen=True, slots=True)
class Emit:
    event: Event


Action = DialLink | AnswerOffer | AcceptAnswer | CloseLink | Send | SendSignal | SendRelay | Emit


class MeshCore:
    """All links of one room, without I/O. Feed it inputs, then carry out `actions()`."""

    def __init__(
        self,
        *,
        replica: Replica,
        nonces: Callable[[int], bytes],
        now: float,
        room_key: bytes | None = None,
        game_check: GameCheck | None = None,
        relay_allowed: bool = True,
        water_marks: tuple[int, int] = (LOW_WATER, HIGH_WATER),
    ) -> None:
        """`nonces(n)`: n fresh random bytes (binding nonces, relay secrets). `room_key`: from the
        room's password. `game_check`: our game in the hello, and the check of each peer's.
        `relay_allowed`: False when the player turned the relay off (`--no-relay`)."""
        self.replica = replica
        self.signer = replica.signer
        self.key = self.signer.key
        self.room_key = room_key
        self.relay_refusals: Counter[str] = Counter()  # relayed frames refused, all peers
        self.low_water, self.high_water = water_marks
        if not 0 < self.low_water < self.high_water:
            raise ValueError("water marks must be 0 < low < high")
        self._nonces = nonces
        self._game_check = game_check
        self._relay_allowed = relay_allowed
        self._relay_reachable = relay_allowed
        self._peers: dict[bytes, MeshPeer] = {}
        self._next_link_id = 1
        self._pacer = PublishPacer(now)
        self._actions: list[Action] = []
        self._stopped = False

    # ---- output ------------------------------------------------------------------------------

    def actions(self) -> list[Action]:
        """What was decided since the last call, in order."""
        actions, self._actions = self._actions, []
        return actions

    def get_timer(self) -> float | None:
        deadlines = [self.replica.get_timer(), self._pacer.get_timer()]
        for peer in self._peers.values():
            deadlines += [peer.direct.get_timer(), peer.binding.get_timer() if peer.binding else None]
            session = peer.relay.session
            deadlines.append(session.get_timer() if session is not None else None)
            if self._relay_reachable:
                deadlines.append(peer.relay_due())
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timer(self, at: Instant) -> None:
        due = self._pacer.get_timer()
        if due is not None and at.mono >= due:
            self._publish(at)
        for event in self.replica.handle_timer(at.mono, wall=at.wall):
            self._replica_event(event, at)
        for peer in list(self._peers.values()):
            self._peer_timers(peer, at)
        self._flush()

    def _peer_timers(self, peer: MeshPeer, at: Instant) -> None:
        now = at.mono
        refused = peer.binding.handle_timer(now) if peer.binding is not None else None
        if refused is not None:
            self._refuse(peer, refused, now)
        session = peer.relay.session
        match session.handle_timer(now) if session is not None else None:
            case relay_session.Refused() as failed:
                self._relay_refused(peer, failed, now)
            case Drained():
                peer.relay.drained()
        due = peer.relay_due()
        if self._relay_reachable and due is not None and now >= due:
            log.info("peer %s unreached: trying the rendezvous's relay", _short(peer.key))
            self._start_relay_session(peer, now)
        match peer.direct.handle_timer(now):
            case GiveUp(reason):
                self._drop_link(peer, reason, now)
            case Dial():
                self._dial(peer, now)
            case AskRedial(last_link):  # only the offerer dials: tell it the link we had is gone
                self._actions.append(SendSignal(peer.key, Restart(last_link).to_wire()))

    # ---- the roster and signalling -------------------------------------------------------------

    def relay_reachable(self, reachable: bool) -> None:
        """Whether the rendezvous's relay can be used now (our signalling is connected)."""
        self._relay_reachable = self._relay_allowed and reachable

    def add_past_members(self, keys: Iterable[bytes]) -> None:
        """Members who left before we knew them: their signed writes are accepted (not dialled)."""
        self.replica.add_members(set(keys) - {self.key})

    def set_roster(self, keys: Iterable[bytes], at: Instant) -> None:
        """The room's members as the rendezvous lists them (our own key may be included).

        Being listed is a sign a member is reachable through the rendezvous again: its direct
        path takes it as a hint to try at once."""
        if self._stopped:
            return
        wanted = set(keys) - {self.key}
        self.replica.set_roster(wanted)
        self.replica.add_members(wanted)  # their signed writes are accepted from now on (`authors`)
        for key in set(self._peers) - wanted:
            gone = self._peers.pop(key)
            self._end_relay(gone, "left the room", at.mono)
            self._close_link(gone, "left the room", at.mono)
        for key in wanted:
            known = self._peers.get(key)
            if known is not None:
                known.direct.hint(at.mono)
            else:
                self._peers[key] = MeshPeer.new(key, role_towards(self.key, key), at.mono)

    def handle_signal(self, sender: bytes, data: object, at: Instant) -> None:
        """A signalling message relayed from `sender`; anything malformed is logged and dropped."""
        peer = self._peers.get(sender)
        if peer is None:
            log.info("signal from %s, who is outside the roster", _short(sender))
            return
        try:
            signal = parse_signal(data)
        except SignalError as exc:
            log.info("bad signal from %s: %s", _short(sender), exc)
            return
        match signal:
            case Restart(link_id) if peer.role is Role.OFFERER:
                if peer.direct.restart_requested(link_id, at.mono) is not None:
                    self._dial(peer, at.mono)
            case Offer(link_id, sdp) if peer.role is Role.ANSWERER:
                self._answer(peer, link_id, sdp, at.mono)
            case Answer(link_id, sdp) if peer.role is Role.OFFERER:
                self._accept_answer(peer, link_id, sdp)
            case _:
                log.info("unexpected %s from %s", type(signal).__name__, _short(sender))

    def _dial(self, peer: MeshPeer, now: float) -> None:
        self._close_link(peer, "redialling", now)
        link_id, self._next_link_id = self._next_link_id, self._next_link_id + 1
        peer.direct.dial(link_id, now)
        peer.answer_taken = False
        self._actions.append(DialLink(peer.key, link_id))

    def _answer(self, peer: MeshPeer, link_id: int, sdp: str, now: float) -> None:
        """Answer an offer relayed by the rendezvous. The offer proves nothing (the rendezvous may
        have made it up), so it never ends a link that is alive: while we heard from the peer in
        the last `LIVE_LINK` seconds, the dial machine holds the offer, and hands it back if that
        link is lost soon (`DialMachine.hold_offer`, `lost`)."""
        if not peer.direct.may_answer():
            log.info("ignoring an offer from %s: refused or cut recently", _short(peer.key))
            return
        alive = self.replica.heard_within(peer.key, now, LIVE_LINK)
        if peer.direct.state is DialState.ADMITTED and alive:
            log.info("holding an offer from %s: our link with it is alive", _short(peer.key))
            peer.direct.hold_offer(link_id, sdp, now)
            peer.stats.offers_held += 1
            return
        self._close_link(peer, "superseded by a new offer", now)
        peer.direct.offered(link_id, now)
        self._actions.append(AnswerOffer(peer.key, link_id, sdp))

    def _accept_answer(self, peer: MeshPeer, link_id: int, sdp: str) -> None:
        awaited = peer.direct.state is DialState.CONNECTING and peer.direct.link_id == link_id
        if not awaited or peer.answer_taken:
            log.info("stale answer from %s for link %d", _short(peer.key), link_id)
            return
        peer.answer_taken = True
        self._actions.append(AcceptAnswer(peer.key, link_id, sdp))

    # ---- what a direct link reports ------------------------------------------------------------

    def _current(self, key: bytes, link_id: int) -> MeshPeer | None:
        peer = self._peers.get(key)
        return peer if peer is not None and peer.is_current(link_id) else None

    def link_open(self, key: bytes, link_id: int, fingerprints: tuple[str, str] | str, at: Instant) -> None:
        """The link's channel is open; `fingerprints`: (ours, theirs) from the two descriptions,
        or why they could not be read (the link is dropped)."""
        peer = self._current(key, link_id)
        if peer is None or peer.direct.state is not DialState.CONNECTING:
            return
        if isinstance(fingerprints, str):
            self._drop_link(peer, fingerprints, at.mono)
            return
        peer.direct.opened()
        peer.binding = Binding(
            room=self.signer.room,
            role=peer.role,
            local_key=self.key,
            peer=peer.key,
            local_fingerprint=fingerprints[0],
            remote_fingerprint=fingerprints[1],
            local_nonce=self._nonces(codec.NONCE_SIZE),
            room_key=self.room_key,
            now=at.mono,
            platform_check=self._game_check.check if self._game_check else None,
        )
        platform = self._game_check.platform if self._game_check else None
        self._send_handshake(peer, codec.Nonce(peer.binding.local_nonce, platform))

    def link_message(self, key: bytes, link_id: int, data: bytes, at: Instant) -> None:
        peer = self._current(key, link_id)
        if peer is None:
            return
        if peer.direct.state is DialState.ADMITTED:
            for event in self.replica.receive(peer.key, data, at.mono, wall=at.wall):
                self._replica_event(event, at)
        elif peer.binding is not None:
            self._bind_message(peer, peer.binding, data, at.mono)
        self._flush()

    def link_buffered(self, key: bytes, link_id: int, amount: int, at: Instant) -> None:
        """After a `Send`: the link's buffered bytes. Above the high water mark the peer pauses;
        past `MAX_BUFFERED` it is not draining at all, and the link is dropped."""
        peer = self._current(key, link_id)
        if peer is None or peer.direct.state is not DialState.ADMITTED:
            return  # (a handshake in flight: nothing of the replica's to pause)
        if amount > MAX_BUFFERED:  # it does not drain: drop it rather than buffer without end
            self._drop_link(peer, f"not draining ({amount} bytes waiting)", at.mono)
            return
        if not peer.paused and amount > self.high_water:
            peer.paused = True
            peer.stats.pauses += 1
            self.replica.pause_peer(key)

    def link_unsendable(self, key: bytes) -> None:
        """A message could not be handed to its path (not open): the replica resyncs it later."""
        peer = self._peers.get(key)
        if peer is not None:
            peer.stats.unsendable += 1

    def link_drained(self, key: bytes, link_id: int, at: Instant) -> None:
        peer = self._current(key, link_id)
        if peer is not None and peer.paused:
            peer.paused = False
            self.replica.resume_peer(key, at.mono)
            self._flush()

    def link_closed(self, key: bytes, link_id: int, reason: str, at: Instant) -> None:
        """The link closed or failed (a description the peer sent could not be applied, too)."""
        peer = self._current(key, link_id)
        if peer is not None:
            self._drop_link(peer, reason, at.mono)

    # ---- identity binding on a direct link -----------------------------------------------------

    def _send_handshake(self, peer: MeshPeer, body: codec.Body) -> None:
        self._actions.append(Send(peer.key, peer.direct.link_id, self.signer.encode(body)))

    def _bind_message(self, peer: MeshPeer, binding: Binding, data: bytes, now: float) -> None:
        match binding.receive(data, keys=set(self._peers)):
            case Refused() as refused:
                self._refuse(peer, refused, now)
            case Admitted():
                self._admit(peer, now)
            case proof:
                self._send_handshake(peer, proof)

    def _admit(self, peer: MeshPeer, now: float) -> None:
        relayed = peer.carrier is Carrier.RELAY
        peer.direct.admitted()
        peer.binding, peer.unreached_since = None, None
        peer.stats.admissions += 1
        if relayed:
            peer.direct.relay_gone(now)  # (patience back to normal for the next loss)
            # The replica keeps its link: the next message simply goes the direct way, and what
            # is still in flight on the relay is opened for a while yet.
            peer.relay.superseded(now)
            peer.stats.moved_to_direct += 1
            log.info("peer %s: moved from the relay to a direct link", _short(peer.key))
            self._emit(PathChanged(peer.key, Path.DIRECT))
            return
        if peer.relay.state is not RelayState.OFF:
            peer.relay.lost()  # a relay session still binding (or draining) is not needed any more
        self.replica.add_peer(peer.key, now)
        log.info("peer %s admitted", _short(peer.key))
        self._emit(PeerAdmitted(peer.key))

    def _refuse(self, peer: MeshPeer, refused: Refused, now: float) -> None:
        """A binding that failed. Only a refusal the key itself signed for (its proof verified,
        the password did not) bans it; any other may be the rendezvous's doing (a made-up offer,
        swapped fingerprints), so the link is dropped and dialled again later, the key not banned."""
        log.warning("refused peer %s: %s (%s)", _short(peer.key), refused.reason.value, refused.detail)
        peer.stats.refusals[refused.reason.value] += 1
        if refused.reason in BANNED_FOR:
            self._ban(peer, f"refused: {refused.reason.value}", REFUSED_WAIT, now)
        else:
            self._drop_link(peer, f"refused: {refused.reason.value}", now)
        self._emit(PeerRefused(peer.key, refused.reason.value, refused.detail))

    def _ban(self, peer: MeshPeer, reason: str, wait: float, now: float) -> None:
        self._end_relay(peer, reason, now)
        self._close_link(peer, reason, now)
        peer.direct.banned(now, wait)

    # ---- the relay through the rendezvous (the last resort) ------------------------------------

    def _start_relay_session(self, peer: MeshPeer, now: float) -> RelaySession:
        session = RelaySession(
            signer=self.signer,
            role=peer.role,
            peer=peer.key,
            secret=self._nonces(codec.NONCE_SIZE),
            room_key=self.room_key,
            now=now,
        )
        peer.relay.start(session)
        self._actions.append(SendRelay(peer.key, session.start().frame))
        return session

    def handle_relay(self, sender: bytes, frame: bytes, at: Instant) -> None:
        """A frame the rendezvous relayed from `sender`: opened, checked, and fed on (or refused
        and counted; the rendezvous may have made it up)."""
        peer = self._peers.get(sender)
        if peer is None or not self._relay_allowed:
            self._count_relay_refusal(None, "relay_unknown_peer")
            return
        session = peer.relay.session
        if (session is None or not session.admitted) and peer.role is Role.ANSWERER and is_relay_nonce(frame):
            # The offerer starts a relay session (or starts over): the answerer follows.
            if not peer.may_follow_relay():
                state = state_name(peer.direct.state, peer.relay.state)
                self._relay_dropped(peer, Dropped(RelayRefusal.UNEXPECTED, f"a relay nonce while {state}"))
                return
            session = self._start_relay_session(peer, at.mono)
        match stray(frame) if session is None else session.receive(frame, keys=set(self._peers)):
            case Dropped() as dropped:
                self._relay_dropped(peer, dropped)
            case Opened(data) if self.replica.is_connected(peer.key):
                for event in self.replica.receive(peer.key, data, at.mono, wall=at.wall):
                    self._replica_event(event, at)
            case Reply(reply):
                self._actions.append(SendRelay(peer.key, reply))
            case relay_session.Admitted():
                self._relay_admitted(peer, at.mono)
            case relay_session.Refused() as refused:
                self._relay_refused(peer, refused, at.mono)
        self._flush()

    def _relay_dropped(self, peer: MeshPeer, dropped: Dropped) -> None:
        log.debug("relayed frame from %s refused: %s (%s)", _short(peer.key), dropped.counter, dropped.detail)
        self._count_relay_refusal(peer, dropped.counter)

    def _relay_admitted(self, peer: MeshPeer, now: float) -> None:
        peer.relay.admitted()
        peer.unreached_since = None
        peer.direct.relay_carries(now)
        peer.stats.admissions += 1
        peer.stats.relayed += 1
        self.replica.add_peer(peer.key, now)
        log.warning("peer %s can only be reached through the rendezvous's relay", _short(peer.key))
        self._emit(PeerAdmitted(peer.key))
        self._emit(PathChanged(peer.key, Path.RELAYED))

    def _relay_refused(self, peer: MeshPeer, refused: relay_session.Refused, now: float) -> None:
        """A relay session that failed: the rendezvous may be to blame, so no ban, only a count."""
        counter, detail = refused.counter, refused.detail
        log.warning("relay session with %s failed: %s (%s)", _short(peer.key), counter, detail)
        self._count_relay_refusal(peer, refused.counter)
        self._relay_lost(peer, refused.sentence, now)

    def _relay_lost(self, peer: MeshPeer, reason: str, now: float) -> None:
        """The relay session ended (silent, refused): unless it was only draining, the peer is
        unreached from now, and the direct path is tried again at once."""
        if peer.relay.state in (RelayState.OFF, RelayState.DRAINING):
            peer.relay.lost()
            return
        self._end_relay(peer, reason, now)
        peer.unreached_since = now  # (a relay that failed to bind waits RELAY_AFTER again, too)
        peer.direct.relay_gone(now)
        peer.stats.reconnects += 1

    def _end_relay(self, peer: MeshPeer, reason: str, now: float) -> None:
        """Forget the relay session; if the peer was synced through it, the replica forgets it."""
        if peer.relay.state is RelayState.OFF:
            return
        carried = peer.relay.carries
        peer.relay.lost()
        if carried:
            peer.unreached_since = now  # (so the relay is tried again once the peer is due)
            self.replica.remove_peer(peer.key)
            peer.stats.links_lost += 1
            peer.stats.last_loss = reason
            log.info("relayed link with %s lost: %s", _short(peer.key), reason)
            self._emit(LinkLost(peer.key, reason))

    def _count_relay_refusal(self, peer: MeshPeer | None, reason: str) -> None:
        self.relay_refusals[reason] += 1
        if peer is not None:
            peer.stats.relay_refusals[reason] += 1

    # ---- replica events ------------------------------------------------------------------------

    def _replica_event(self, event: Event, at: Instant) -> None:
        match event:
            case PeerSilent(key) if (peer := self._peers.get(key)) is not None:
                self._lose(peer, "silent", at.mono)
            case CutPeer(key, reason) if (peer := self._peers.get(key)) is not None:
                self._cut(peer, reason, at.mono)
            case PeerLeft(key, reason) if (peer := self._peers.get(key)) is not None:
                self._lose(peer, f"said goodbye: {reason}", at.mono)
            case Rejected(key, reason, detail):
                log.debug("rejected from %s: %s %s", _short(key), reason, detail)
        self._emit(event)

    def _cut(self, peer: MeshPeer, reason: str, now: float) -> None:
        if peer.linked or peer.relay.carries:
            log.warning("cutting peer %s off: %s", _short(peer.key), reason)
            peer.stats.cuts += 1
            self._ban(peer, f"cut: {reason}", CUT_WAIT, now)

    def _lose(self, peer: MeshPeer, reason: str, now: float) -> None:
        if peer.carrier is Carrier.RELAY:
            self._relay_lost(peer, reason, now)
        else:
            self._drop_link(peer, reason, now)

    def _drop_link(self, peer: MeshPeer, reason: str, now: float) -> None:
        """The direct link is lost (closed, failed, silent, given up): close it; the dial machine
        schedules the next attempt, or hands back an offer it held while the link lived."""
        if not peer.linked:
            return
        self._close_link(peer, reason, now)
        held = peer.direct.lost(now)
        peer.stats.reconnects += 1
        if held is not None:
            self._answer(peer, held.link_id, held.sdp, now)

    def _close_link(self, peer: MeshPeer, reason: str, now: float) -> None:
        """Forget and close the direct link, if any (the dial machine is told by the caller)."""
        if not peer.linked:
            return
        admitted = peer.direct.state is DialState.ADMITTED
        peer.binding, peer.paused = None, False
        if admitted:
            if peer.relay.state is RelayState.DRAINING:
                peer.relay.lost()  # what drained on the relay went with the link it gave way to
            self.replica.remove_peer(peer.key)
            peer.unreached_since = now
            peer.stats.links_lost += 1
            peer.stats.last_loss = reason
            log.info("link with %s lost: %s", _short(peer.key), reason)
            self._emit(LinkLost(peer.key, reason))
        self._actions.append(CloseLink(peer.key, peer.direct.link_id))

    def close_all(self, reason: str, at: Instant) -> None:
        """Close every link and relay session: the mesh has stopped, and takes no roster again."""
        self._stopped = True
        for peer in self._peers.values():
            self._end_relay(peer, reason, at.mono)
            self._close_link(peer, reason, at.mono)
        self._peers.clear()

    # ---- sending -------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Hand the replica's queued messages to the path that carries each peer."""
        for key, data in self.replica.messages_to_send():
            peer = self._peers.get(key)
            if peer is None:
                continue
            match peer.carrier:
                case Carrier.DIRECT if len(data) <= MAX_MESSAGE:
                    self._actions.append(Send(key, peer.direct.link_id, data))
                case Carrier.RELAY:
                    self._send_relayed(peer, data)
                case Carrier.DIRECT:
                    peer.stats.unsendable += 1

    def _send_relayed(self, peer: MeshPeer, data: bytes) -> None:
        session = peer.relay.session
        if session is None or not session.admitted:
            peer.stats.unsendable += 1
            return
        self._actions.append(SendRelay(peer.key, session.seal(data)))

    # ---- the application's side ------------------------------------------------------------

    def local_changes(
        self,
        changes: Iterable[Run],
        at: Instant,
        written_at: float | None = None,
        deltas: Iterable[Delta] = (),
    ) -> None:
        """Changes from our emulator; raises ValueError for bytes outside the shared regions.

        Normally one call per frame, published at once as one signed batch to every synced peer;
        faster calls are coalesced and paced (`peer.core.sync.pacing`). `written_at` is the wall
        time the game made them (default: now); `deltas` how much it changed counters."""
        changes, deltas = list(changes), list(deltas)
        layout = self.replica.state.layout
        for address, data in changes:
            if not layout.check_run(address, len(data)):
                raise ValueError(f"change at {address:#06x} is outside the shared regions")
        for first, _ in deltas:
            if first not in layout.counters:
                raise ValueError(f"change at {first:#06x} is not a counter")
        self._pacer.add(changes, at.wall if written_at is None else written_at, deltas)
        if self._pacer.get_timer() is None:
            self._publish(at)

    def _publish(self, at: Instant) -> None:
        """Publish the pending changes if the pace allows (else the timer says when it will)."""
        batch = self._pacer.take(at.mono)
        if batch is None:
            return
        published = self.replica.local_changes(
            batch.runs, at.mono, wall=at.wall, written_at=batch.written_at, deltas=batch.deltas
        )
        self._flush()
        if published or published.corrections or published.deltas:
            self._emit(Published(published.runs, published.corrections, published.deltas))

    def unpublished(self) -> dict[int, int]:
        """Our game's values waiting for the publishing pace (address -> value): what the
        emulator shows there is newer than the replica's value, as far as we know."""
        return self._pacer.pending()

    def send_chat(self, text: str, at: Instant) -> None:
        self.replica.send_chat(text, at.mono)
        self._flush()

    def request_resync(self, at: Instant) -> None:
        self.replica.request_resync(at.mono)
        self._flush()

    def say_goodbye(self, reason: str, at: Instant) -> None:
        self.replica.say_goodbye(reason, at.mono)
        self._flush()

    def admitted(self) -> set[bytes]:
        """Peers we sync with, directly or through the relay."""
        return {key for key, peer in self._peers.items() if peer.carrier is not None}

    def carrier(self, key: bytes) -> Carrier | None:
        peer = self._peers.get(key)
        return None if peer is None else peer.carrier

    def statistics(self) -> dict[bytes, LinkStatistics]:
        """Per peer: the mesh's counters and the replica's. `path` is set for relayed peers only:
        which way a direct link goes is the link's to say (the adapter fills it in)."""
        sync = self.replica.statistics().peers
        report = {}
        for key, peer in self._peers.items():
            stats = peer.stats
            stats.state = state_name(peer.direct.state, peer.relay.state)
            stats.sync = sync.get(key)
            stats.path = Path.RELAYED if peer.carrier is Carrier.RELAY else None
            report[key] = stats
        return report

    def _emit(self, event: Event) -> None:
        self._actions.append(Emit(event))
