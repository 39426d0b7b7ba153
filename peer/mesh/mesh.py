"""The mesh: one room's WebRTC links around one `Replica`, wired to the pure parts that decide.

Per roster member the mesh keeps at most one current `PeerLink` and does the I/O for these parts
(aioquic-style glue: they decide, it sends, closes, spawns and emits):
- `Binding` (`peer.core.mesh.binding`): link bytes go to it until the peer is admitted, then to
  `replica.receive`; a refusal the key signed for itself bans it, any other only drops the link;
- `DialMachine` (`peer.core.mesh.dial`): when the offerer dials (the answerer asks it to), when an
  attempt is given up, how long a refused or cut peer is banned, when to try the relay, and the
  offer held while our link is alive. A lost link is routine: the next admission resyncs;
- `RelaySession` (`peer.core.mesh.relay_session`, threat model in `peer.core.mesh.relay`): the last resort
  (issue 13), the same binding through the rendezvous's relay (a `RelaySender`, frames fed back to
  `handle_relay`), then every message sealed. The replica does not notice the path: when a direct
  attempt is admitted the mesh just sends on it, and the session drains what was in flight;
- the `Replica` itself: what it queued is flushed at once (`_flush`), keeping each data channel's
  `bufferedAmount` bounded with `pause_peer` / `resume_peer`; its timers drive heartbeats,
  digests and liveness; `PublishPacer` (`peer.core.sync.pacing`) paces our own changes;
- `peer.core.mesh.events`: what the mesh tells the application (events, `LinkStatistics`).

It does not own the signalling connection (a `SignalSender` is passed in, and signals are fed to
`handle_signal`) nor the emulator (changes come in through `local_changes`, and `BytesChanged`
goes out through `on_event`). Two clocks are injected: `clock`, monotonic, runs every timer (the
loop's waits, dial and binding deadlines, the publishing pace, the replica's heartbeats and silence
limit), so a wall-clock step cannot freeze or drop links; `wall` (`time.time`) is handed to the
replica only for Lamport stamps, the bound on values from the future and skew estimates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from aiortc.exceptions import InvalidAccessError, InvalidStateError
from nacl.signing import SigningKey

from peer.core.mesh import relay_session
from peer.core.mesh.binding import Admitted, Binding, RefusalReason, Refused, Role
from peer.core.mesh.dial import (
    CUT_WAIT,
    REFUSED_WAIT,
    AskRedial,
    Dial,
    DialMachine,
    DialState,
    GiveUp,
    StartRelay,
)
from peer.core.mesh.events import (
    LinkLost,
    LinkStatistics,
    PathChanged,
    PeerAdmitted,
    PeerRefused,
    Published,
    status_line,
)
from peer.core.mesh.paths import Path, classify
from peer.core.mesh.relay import RelayRefusal
from peer.core.mesh.relay_session import Drained, Dropped, Opened, RelaySession, Reply, is_relay_nonce, stray
from peer.core.mesh.signals import Answer, Offer, Restart, SignalError, parse_signal
from peer.core.room.room_game import GameCheck
from peer.core.sync import codec
from peer.core.sync.pacing import PublishPacer
from peer.core.sync.replica import (
    CutPeer,
    Event,
    PeerLeft,
    PeerSilent,
    Rejected,
    Replica,
)
from peer.core.sync.state import Delta, Run
from peer.mesh.webrtc import (
    HIGH_WATER,
    LOW_WATER,
    MAX_MESSAGE,
    IceOptions,
    LinkState,
    PeerLink,
    SignalSender,
    role_towards,
)

log = logging.getLogger(__name__)

LIVE_LINK = 2.5  # seconds: heard from this recently, a link is alive and no offer ends it
BANNED_FOR = frozenset({RefusalReason.PASSWORD_MISMATCH})  # refusals the key signed for itself

# What aiortc raises while applying a session description a peer sent us: a fuzz of mutated
# offers (400 cases) produced AssertionError, ValueError, AttributeError, KeyError and TypeError
# from its SDP parser, besides its own errors. Such a step only ever drops that one link. Only the
# steps that apply a peer's description (`answer`, `accept_answer`) are guarded so: an error in
# our own offer or close is a bug and ends the mesh's TaskGroup, not a warning and a redial.
_SDP_ERRORS = (
    AssertionError,
    AttributeError,
    IndexError,
    InvalidAccessError,
    InvalidStateError,
    KeyError,
    OSError,
    TypeError,
    ValueError,
)


class RelaySender(Protocol):
    """The rendezvous's relay, as the signalling client offers it."""

    def relay_available(self) -> bool: ...
    def send_relay(self, to: bytes, frame: bytes) -> bool: ...


# ---- per-peer bookkeeping --------------------------------------------------------------------


@dataclass(slots=True)
class _Peer:
    key: bytes
    role: Role
    dial: DialMachine  # when to dial, give up, try again (the state `link` must agree with)
    link: PeerLink | None = None
    binding: Binding | None = None
    relay: RelaySession | None = None
    paused: bool = False
    stats: LinkStatistics = field(default_factory=LinkStatistics)

    @property
    def admitted(self) -> bool:
        return self.dial.state is DialState.ADMITTED


class Mesh:
    """All links of one room. Call `run()` in a task; feed it `set_roster` and `handle_signal`."""

    def __init__(
        self,
        *,
        replica: Replica,
        signing_key: SigningKey,
        room: str,
        signals: SignalSender,
        ice: IceOptions | None = None,
        room_key: bytes | None = None,
        on_event: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        nonces: Callable[[int], bytes] = os.urandom,
        water_marks: tuple[int, int] = (LOW_WATER, HIGH_WATER),
        relay: RelaySender | None = None,
        game_check: GameCheck | None = None,
    ) -> None:
        """`water_marks`: a link's buffered bytes above the high mark pause the peer in the
        replica; falling below the low mark resumes it. `relay`: the rendezvous's relay, None
        when the player turned it off (`--no-relay`). `game_check`: our game in the hello, and
        the check of each peer's (`peer.core.room.room_game`)."""
        self.replica = replica
        self.key = bytes(signing_key.verify_key)
        self.room = room
        self._signing_key = signing_key
        self._signals = signals
        self._ice = ice if ice is not None else IceOptions()
        self._room_key = room_key
        self._on_event = on_event
        self._clock = clock
        self._wall = wall
        self._nonces = nonces
        self._game_check = game_check
        self._low_water, self._high_water = water_marks
        self._relay = relay
        self.relay_refusals: Counter[str] = Counter()  # relayed frames refused, all peers
        if not 0 < self._low_water < self._high_water:
            raise ValueError("water marks must be 0 < low < high")
        self._peers: dict[bytes, _Peer] = {}
        self._next_link_id = 1
        self._pacer = PublishPacer(clock())  # (local changes, coalesced and paced)
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._running = asyncio.Event()
        self._sleeping_until: float | None = None  # the deadline the loop waits for
        self._stopping = False
        self._closing: list[PeerLink] = []  # links to close once the task group has ended

    # ---- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive timers until `stop()`; every task the mesh starts belongs to this TaskGroup."""
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                self._running.set()
                try:
                    while not self._stopping:
                        self._handle_timers(self._clock())
                        self._wake.clear()
                        deadline = self._sleeping_until = self._next_deadline()
                        delay = None if deadline is None else max(0.0, deadline - self._clock())
                        # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                        # cancel that comes as the wake-up does, and the loop would go on.)
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(delay):
                                await self._wake.wait()
                finally:
                    # Not in the group: cancelled or failing, it would cancel the closes unstarted.
                    self._tasks = None
                    for peer in list(self._peers.values()):
                        self._end_relay(peer, "mesh stopped")
                        self._close_link(peer, "mesh stopped")
        finally:
            closing, self._closing = self._closing, []
            await asyncio.gather(*(link.close() for link in closing), return_exceptions=True)

    async def wait_running(self) -> None:
        """Until `run()` has started: only then may signals be handled."""
        await self._running.wait()

    def stop(self, reason: str = "leaving") -> None:
        """Say goodbye to every admitted peer, then end `run()` (which closes the links)."""
        self.replica.say_goodbye(reason, self._clock())
        self._flush()
        self._stopping = True
        self._wake.set()

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        if self._tasks is None:
            raise RuntimeError("the mesh is not running")
        self._tasks.create_task(coroutine)  # type: ignore[arg-type]

    def _next_deadline(self) -> float | None:
        deadlines = [self.replica.get_timer(), self._pacer.get_timer()]
        relay = self._relay_ok()
        for peer in self._peers.values():
            deadlines.append(peer.dial.get_timer(relay))
            if peer.binding is not None:
                deadlines.append(peer.binding.get_timer())
            if peer.relay is not None:
                deadlines.append(peer.relay.get_timer())
        return min((d for d in deadlines if d is not None), default=None)

    def _handle_timers(self, now: float) -> None:
        due = self._pacer.get_timer()
        if due is not None and now >= due:
            self._publish(now)
        for event in self.replica.handle_timer(now, wall=self._wall()):
            self._handle_event(event)
        for peer in list(self._peers.values()):
            self._peer_timers(peer, now)
        self._flush()

    def _peer_timers(self, peer: _Peer, now: float) -> None:
        if peer.binding is not None:
            refused = peer.binding.handle_timer(now)
            if refused is not None:
                self._refuse(peer, refused)
        match peer.relay.handle_timer(now) if peer.relay is not None else None:
            case relay_session.Refused() as failed:
                self._relay_refused(peer, failed)
            case Drained():
                peer.relay = None
        match peer.dial.handle_timer(now, self._relay_ok()):
            case StartRelay():
                self._start_relay(peer, now)
            case GiveUp(reason):
                self._drop_link(peer, reason)
            case Dial():
                self._dial(peer, now)
            case AskRedial(last_link):
                # Only the offerer dials; tell it the link we had is gone.
                self._signals.send_signal(peer.key, Restart(last_link).to_wire())

    # ---- roster and signalling -------------------------------------------------------------

    def set_ice(self, ice: IceOptions) -> None:
        """ICE options for the links dialled from now on (fresh TURN credentials after a reconnect)."""
        self._ice = ice

    def add_past_members(self, keys: Iterable[bytes]) -> None:
        """Members who left before we knew them: their signed writes are accepted (not dialled)."""
        self.replica.add_members(set(keys) - {self.key})

    def set_roster(self, keys: Iterable[bytes]) -> None:
        """The room's members as the rendezvous lists them (our own key may be included).

        Being listed is a sign a member is reachable through the rendezvous again (our signalling
        came back, or it rejoined): each one's dial machine takes it as a hint to try at once."""
        wanted = set(keys) - {self.key}
        self.replica.set_roster(wanted)
        self.replica.add_members(wanted)  # their signed writes are accepted from now on, for good
        now = self._clock()
        for key in set(self._peers) - wanted:
            gone = self._peers.pop(key)
            self._end_relay(gone, "left the room")
            self._close_link(gone, "left the room")
        for key in wanted:
            known = self._peers.get(key)
            if known is not None:
                known.dial.hint(now)
                continue
            role = role_towards(self.key, key)
            self._peers[key] = _Peer(key, role, DialMachine(offerer=role is Role.OFFERER, now=now))
        self._wake.set()
        self._notify()

    def handle_signal(self, sender: bytes, data: object) -> None:
        """A signalling message relayed from `sender`; anything malformed is logged and dropped."""
        if self._tasks is None:
            log.info("signal from %s while the mesh is not running; dropped", sender.hex()[:8])
            return
        peer = self._peers.get(sender)
        if peer is None:
            log.info("signal from %s, who is outside the roster", sender.hex()[:8])
            return
        try:
            signal = parse_signal(data)
        except SignalError as exc:
            log.info("bad signal from %s: %s", sender.hex()[:8], exc)
            return
        now = self._clock()
        match signal:
            case Restart(link_id) if peer.role is Role.OFFERER:
                if peer.dial.restart_requested(link_id, now) is not None:
                    self._dial(peer, now)
            case Offer(link_id, sdp) if peer.role is Role.ANSWERER:
                self._answer(peer, link_id, sdp, now)
            case Answer(link_id, sdp) if peer.role is Role.OFFERER:
                self._accept_answer(peer, link_id, sdp)
            case _:
                log.info("unexpected %s from %s", type(signal).__name__, sender.hex()[:8])

    def _dial(self, peer: _Peer, now: float) -> None:
        self._close_link(peer, "redialling")
        link = self._new_link(peer, self._next_link_id)
        peer.dial.dial(link.link_id, now)
        self._next_link_id += 1
        self._spawn(self._offer(link))

    def _answer(self, peer: _Peer, link_id: int, sdp: str, now: float) -> None:
        """Answer an offer relayed by the rendezvous. The offer proves nothing (the rendezvous may
        have made it up), so it never ends a link that is alive: while we heard from the peer in
        the last `LIVE_LINK` seconds, the dial machine holds the offer, and hands it back if that
        link is lost soon (`DialMachine.hold_offer`, `lost`)."""
        if not peer.dial.may_answer():
            log.info("ignoring an offer from %s: refused or cut recently", peer.key.hex()[:8])
            return
        if peer.admitted and peer.link is not None and self.replica.heard_within(peer.key, now, LIVE_LINK):
            log.info("holding an offer from %s: our link with it is alive", peer.key.hex()[:8])
            peer.dial.hold_offer(link_id, sdp, now)
            peer.stats.offers_held += 1
            return
        self._close_link(peer, "superseded by a new offer")
        link = self._new_link(peer, link_id)
        peer.dial.offered(link_id, now)
        self._spawn(self._apply_description(peer, link, link.answer(sdp)))

    def _accept_answer(self, peer: _Peer, link_id: int, sdp: str) -> None:
        link = peer.link
        if link is None or link.link_id != link_id or link.state is not LinkState.CONNECTING:
            log.info("stale answer from %s for link %d", peer.key.hex()[:8], link_id)
            return
        self._spawn(self._apply_description(peer, link, link.accept_answer(sdp)))

    def _new_link(self, peer: _Peer, link_id: int) -> PeerLink:
        link = PeerLink(
            local_key=self.key,
            peer=peer.key,
            link_id=link_id,
            ice=self._ice,
            listener=self,
            signals=self._signals,
            low_water=self._low_water,
        )
        peer.link, peer.binding = link, None
        self._wake.set()
        return link

    async def _offer(self, link: PeerLink) -> None:
        """Our own offer: nothing from the peer is parsed here, so an error is a bug and ends
        the mesh; only a link that was closed meanwhile (superseded, peer left) is routine."""
        with contextlib.suppress(InvalidStateError):
            await link.offer()

    async def _apply_description(self, peer: _Peer, link: PeerLink, step: Awaitable[None]) -> None:
        """Apply a description the peer sent; what aiortc's parser raises drops only that link."""
        try:
            await step
        except _SDP_ERRORS as exc:
            log.warning("link %d with %s failed: %s", link.link_id, peer.key.hex()[:8], exc)
            if peer.link is link:
                self._drop_link(peer, f"signalling failed: {exc}")

    # ---- link events (LinkListener) --------------------------------------------------------

    def _current(self, link: PeerLink) -> _Peer | None:
        peer = self._peers.get(link.peer)
        return peer if peer is not None and peer.link is link else None

    def link_open(self, link: PeerLink) -> None:
        peer = self._current(link)
        if peer is None:
            return
        try:
            local_fp, remote_fp = link.fingerprints()
        except ValueError as exc:
            self._drop_link(peer, str(exc))
            return
        now = self._clock()
        peer.dial.opened()
        peer.binding = Binding(
            room=self.room,
            role=link.role,
            local_key=self.key,
            peer=peer.key,
            local_fingerprint=local_fp,
            remote_fingerprint=remote_fp,
            local_nonce=self._nonces(codec.NONCE_SIZE),
            room_key=self._room_key,
            now=now,
            platform_check=self._game_check.check if self._game_check else None,
        )
        platform = self._game_check.platform if self._game_check else None
        self._send_handshake(peer, codec.Nonce(peer.binding.local_nonce, platform))
        self._wake.set()

    def link_message(self, link: PeerLink, data: bytes) -> None:
        peer = self._current(link)
        if peer is None:
            return
        if peer.admitted:
            for event in self.replica.receive(peer.key, data, self._clock(), wall=self._wall()):
                self._handle_event(event)
        elif peer.binding is not None:
            self._bind_message(peer, peer.binding, data)
        self._flush()

    def link_drained(self, link: PeerLink) -> None:
        peer = self._current(link)
        if peer is not None and peer.paused:
            peer.paused = False
            self.replica.resume_peer(peer.key, self._clock())
            self._flush()

    def link_closed(self, link: PeerLink, reason: str) -> None:
        peer = self._current(link)
        if peer is not None:
            self._drop_link(peer, reason)

    # ---- identity binding ------------------------------------------------------------------

    def _send_handshake(self, peer: _Peer, body: codec.Body) -> None:
        data = codec.encode(
            body, signing_key=self._signing_key, room=self.room, session=self.replica.session, seq=0
        )
        if peer.link is not None:
            peer.link.send(data)

    def _bind_message(self, peer: _Peer, binding: Binding, data: bytes) -> None:
        match binding.receive(data, keys=set(self._peers)):
            case Refused() as refused:
                self._refuse(peer, refused)
            case Admitted():
                self._admit(peer)
            case proof:
                self._send_handshake(peer, proof)

    def _admit(self, peer: _Peer) -> None:
        relayed = peer.dial.state is DialState.RELAYED
        peer.dial.admitted()
        peer.stats.admissions += 1
        if relayed and peer.relay is not None:
            # The replica keeps its link: the next message simply goes the direct way, and what
            # is still in flight on the relay is opened for a while yet.
            peer.relay.drain(self._clock())
            peer.stats.moved_to_direct += 1
            log.info("peer %s: moved from the relay to a direct link", peer.key.hex()[:8])
            self._emit(PathChanged(peer.key, _path_of(peer.link) or Path.DIRECT))
            return
        peer.relay = None  # a relay session still binding is not needed any more
        self.replica.add_peer(peer.key, self._clock())
        log.info("peer %s admitted", peer.key.hex()[:8])
        self._emit(PeerAdmitted(peer.key))

    def _refuse(self, peer: _Peer, refused: Refused) -> None:
        """A binding that failed. Only a refusal the key itself signed for (its proof verified,
        the password did not) bans it; any other may be the rendezvous's doing (a made-up offer,
        swapped fingerprints), so the link is dropped and dialled again later, the key not banned."""
        log.warning("refused peer %s: %s (%s)", peer.key.hex()[:8], refused.reason.value, refused.detail)
        peer.stats.refusals[refused.reason.value] += 1
        if refused.reason in BANNED_FOR:
            self._ban(peer, f"refused: {refused.reason.value}", REFUSED_WAIT)
        else:
            self._drop_link(peer, f"refused: {refused.reason.value}")
        self._emit(PeerRefused(peer.key, refused.reason.value, refused.detail))

    def _ban(self, peer: _Peer, reason: str, wait: float) -> None:
        self._end_relay(peer, reason)
        self._close_link(peer, reason)
        peer.dial.banned(self._clock(), wait)
        self._wake.set()

    # ---- the relay through the rendezvous (the last resort) ------------------------------------

    def _relay_ok(self) -> bool:
        return self._relay is not None and self._relay.relay_available()

    def _new_relay_session(self, peer: _Peer, now: float) -> RelaySession:
        session = RelaySession(
            room=self.room,
            role=peer.role,
            signing_key=self._signing_key,
            session=self.replica.session,
            peer=peer.key,
            secret=self._nonces(codec.NONCE_SIZE),
            room_key=self._room_key,
            now=now,
        )
        peer.dial.relay()
        peer.relay = session
        self._send_relay_frame(peer, session.start().frame)
        self._wake.set()
        self._notify()
        return session

    def _start_relay(self, peer: _Peer, now: float) -> None:
        log.info("peer %s unreached: trying the rendezvous's relay", peer.key.hex()[:8])
        self._new_relay_session(peer, now)

    def _send_relay_frame(self, peer: _Peer, frame: bytes) -> None:
        if self._relay is not None:
            self._relay.send_relay(peer.key, frame)

    def _send_relayed(self, peer: _Peer, data: bytes) -> None:
        session = peer.relay
        if session is None or not session.admitted or self._relay is None:
            peer.stats.unsendable += 1
            return
        if not self._relay.send_relay(peer.key, session.seal(data)):
            peer.stats.unsendable += 1

    def handle_relay(self, sender: bytes, frame: bytes) -> None:
        """A frame the rendezvous relayed from `sender`: opened, checked, and fed on (or refused
        and counted; the rendezvous may have made it up)."""
        peer = self._peers.get(sender)
        if peer is None or self._relay is None or self._tasks is None:
            self._count_relay_refusal(None, "relay_unknown_peer")
            return
        session = peer.relay
        if (session is None or not session.admitted) and peer.role is Role.ANSWERER and is_relay_nonce(frame):
            # The offerer starts a relay session (or starts over): the answerer follows.
            if not peer.dial.may_follow_relay():
                unexpected = Dropped(RelayRefusal.UNEXPECTED, f"a relay nonce while {peer.dial.state.value}")
                self._relay_dropped(peer, unexpected)
                return
            session = self._new_relay_session(peer, self._clock())
        match stray(frame) if session is None else session.receive(frame, keys=set(self._peers)):
            case Dropped() as dropped:
                self._relay_dropped(peer, dropped)
                return
            case Opened(data) if self.replica.is_connected(peer.key):
                for event in self.replica.receive(peer.key, data, self._clock(), wall=self._wall()):
                    self._handle_event(event)
            case Reply(reply):
                self._send_relay_frame(peer, reply)
            case relay_session.Admitted():
                self._relay_admitted(peer)
            case relay_session.Refused() as refused:
                self._relay_refused(peer, refused)
        self._flush()

    def _relay_dropped(self, peer: _Peer, dropped: Dropped) -> None:
        log.debug(
            "relayed frame from %s refused: %s (%s)", peer.key.hex()[:8], dropped.counter, dropped.detail
        )
        self._count_relay_refusal(peer, dropped.counter)

    def _relay_admitted(self, peer: _Peer) -> None:
        now = self._clock()
        peer.dial.relay_admitted(now)
        peer.stats.admissions += 1
        peer.stats.relayed += 1
        self.replica.add_peer(peer.key, now)
        log.warning("peer %s can only be reached through the rendezvous's relay", peer.key.hex()[:8])
        self._emit(PeerAdmitted(peer.key))
        self._emit(PathChanged(peer.key, Path.RELAYED))

    def _relay_refused(self, peer: _Peer, refused: relay_session.Refused) -> None:
        """A relay session that failed: the rendezvous may be to blame, so no ban, only a count."""
        log.warning(
            "relay session with %s failed: %s (%s)", peer.key.hex()[:8], refused.counter, refused.detail
        )
        self._count_relay_refusal(peer, refused.counter)
        self._relay_lost(peer, refused.sentence)

    def _relay_lost(self, peer: _Peer, reason: str) -> None:
        if not peer.dial.relaying:
            peer.relay = None
            return
        self._end_relay(peer, reason)
        peer.dial.relay_lost(self._clock())
        peer.stats.reconnects += 1
        self._wake.set()

    def _end_relay(self, peer: _Peer, reason: str) -> None:
        """Forget the relay session; if the peer was synced through it, the replica forgets it."""
        if peer.relay is None:
            return
        peer.relay = None
        if peer.dial.state is DialState.RELAYED:
            self.replica.remove_peer(peer.key)
            peer.stats.links_lost += 1
            peer.stats.last_loss = reason
            log.info("relayed link with %s lost: %s", peer.key.hex()[:8], reason)
            self._emit(LinkLost(peer.key, reason))
        self._notify()

    def _count_relay_refusal(self, peer: _Peer | None, reason: str) -> None:
        self.relay_refusals[reason] += 1
        if peer is not None:
            peer.stats.relay_refusals[reason] += 1
        self._notify()

    # ---- replica events --------------------------------------------------------------------

    def _handle_event(self, event: Event) -> None:
        match event:
            case PeerSilent(key):
                self._lose(key, "silent")
            case CutPeer(key, reason):
                self._cut(key, reason)
            case PeerLeft(key, reason):
                self._lose(key, f"said goodbye: {reason}")
            case Rejected(key, reason, detail):
                log.debug("rejected from %s: %s %s", key.hex()[:8], reason, detail)
        self._emit(event)

    def _cut(self, key: bytes, reason: str) -> None:
        peer = self._peers.get(key)
        if peer is not None and (peer.link is not None or peer.dial.state is DialState.RELAYED):
            log.warning("cutting peer %s off: %s", key.hex()[:8], reason)
            peer.stats.cuts += 1
            self._ban(peer, f"cut: {reason}", CUT_WAIT)

    def _lose(self, key: bytes, reason: str) -> None:
        peer = self._peers.get(key)
        if peer is None:
            return
        if peer.dial.relaying:
            self._relay_lost(peer, reason)
        else:
            self._drop_link(peer, reason)

    def _drop_link(self, peer: _Peer, reason: str) -> None:
        """The current link is lost (closed, failed, silent, given up): close it; the dial
        machine schedules the next attempt."""
        if peer.link is None:
            return
        self._close_link(peer, reason)
        now = self._clock()
        held = peer.dial.lost(now)
        peer.stats.reconnects += 1
        self._wake.set()
        if held is not None:
            self._answer(peer, held.link_id, held.sdp, now)

    def _close_link(self, peer: _Peer, reason: str) -> None:
        """Forget and close the current link, if any (the dial machine is told by the caller)."""
        link, was_admitted = peer.link, peer.admitted
        peer.link, peer.binding, peer.paused = None, None, False
        if link is None:
            return
        if was_admitted:
            peer.relay = None  # a relay still draining went with the direct link it gave way to
            self.replica.remove_peer(peer.key)
            peer.stats.links_lost += 1
            peer.stats.last_loss = reason
            log.info("link with %s lost: %s", peer.key.hex()[:8], reason)
            self._emit(LinkLost(peer.key, reason))
        if self._tasks is not None:
            self._spawn(link.close())
        else:
            self._closing.append(link)  # `run()` closes it on its way out
        self._notify()

    # ---- sending ---------------------------------------------------------------------------

    def _flush(self) -> None:
        """Hand the replica's queued messages to the links; pause peers whose channel backs up."""
        for key, data in self.replica.messages_to_send():
            peer = self._peers.get(key)
            if peer is not None and peer.dial.state is DialState.RELAYED:
                self._send_relayed(peer, data)
                continue
            if peer is None or peer.link is None or not peer.admitted:
                continue
            if len(data) > MAX_MESSAGE or not peer.link.send(data):
                peer.stats.unsendable += 1
                continue
            if not peer.paused and peer.link.buffered_amount > self._high_water:
                peer.paused = True
                peer.stats.pauses += 1
                self.replica.pause_peer(key)
        self._rearm()
        self._notify()

    def _rearm(self) -> None:
        """Wake the loop if the replica now wants a timer earlier than the one it waits for."""
        timer = self.replica.get_timer()
        if timer is not None and (self._sleeping_until is None or timer < self._sleeping_until):
            self._wake.set()

    # ---- the application's side ------------------------------------------------------------

    def local_changes(
        self, changes: Iterable[Run], written_at: float | None = None, deltas: Iterable[Delta] = ()
    ) -> None:
        """Changes from our emulator; raises ValueError for bytes outside the shared regions.

        Normally one call per frame, published at once as one signed batch to every admitted
        peer; faster calls are coalesced and paced (`peer.core.sync.pacing`). `written_at` is the wall
        time the game made them (default: now); `deltas` how much it changed counters.
        """
        changes = list(changes)
        layout = self.replica.state.layout
        for address, data in changes:
            if not layout.check_run(address, len(data)):
                raise ValueError(f"change at {address:#06x} is outside the shared regions")
        deltas = list(deltas)
        for first, _ in deltas:
            if first not in layout.counters:
                raise ValueError(f"change at {first:#06x} is not a counter")
        self._pacer.add(changes, self._wall() if written_at is None else written_at, deltas)
        if self._pacer.get_timer() is None:
            self._publish(self._clock())

    def _publish(self, now: float) -> None:
        """Publish the pending changes if the pace allows, else wake when it will."""
        batch = self._pacer.take(now)
        if batch is None:
            self._wake.set()  # (a batch waiting for the pace has a deadline now)
            return
        published = self.replica.local_changes(
            batch.runs, now, wall=self._wall(), written_at=batch.written_at, deltas=batch.deltas
        )
        self._flush()
        if published or published.corrections or published.deltas:
            self._emit(Published(published.runs, published.corrections, published.deltas))

    def send_chat(self, text: str) -> None:
        self.replica.send_chat(text, self._clock())
        self._flush()

    def request_resync(self) -> None:
        self.replica.request_resync(self._clock())
        self._flush()

    def admitted(self) -> set[bytes]:
        """Peers we sync with, directly or through the relay."""
        synced = (DialState.ADMITTED, DialState.RELAYED)
        return {key for key, peer in self._peers.items() if peer.dial.state in synced}

    def link(self, key: bytes) -> PeerLink | None:
        """The current link with a peer (tests use it to send raw bytes or close it)."""
        peer = self._peers.get(key)
        return None if peer is None else peer.link

    def statistics(self) -> dict[bytes, LinkStatistics]:
        sync = self.replica.statistics().peers
        report = {}
        for key, peer in self._peers.items():
            stats = peer.stats
            stats.state = peer.dial.state.value
            stats.sync = sync.get(key)
            stats.path = _path_of(peer.link) if peer.admitted else None
            if peer.dial.state is DialState.RELAYED:
                stats.path = Path.RELAYED
            report[key] = stats
        return report

    def status_line(self) -> str:
        """One line for the peer's status display: each peer's state, RTT and traffic."""
        return status_line(self.statistics())

    def _emit(self, event: Event) -> None:
        if self._on_event is not None:
            self._on_event(event)
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition()` holds, re-checking whenever the mesh changes.

        Bound it with `asyncio.timeout`; the mesh changes at least at every heartbeat."""
        while not condition():
            await self._changed.wait()


def _path_of(link: PeerLink | None) -> Path | None:
    types = link.candidate_types() if link is not None else None
    if types is None:
        return None
    try:
        return classify(*types)
    except ValueError:  # a candidate type aioice made up: say nothing rather than guess
        return None
