"""The mesh: one room's WebRTC links around one `Replica`, and the loop that drives them.

The mesh owns, per roster member, at most one current `Link`, its identity `Binding` and its
reconnection schedule. It is the aioquic-style glue between the pure pieces and the wire:
- link bytes go to the binding until the peer is admitted, then to `replica.receive`;
- whatever the replica queued is flushed to the links right away (`_flush`), keeping each data
  channel's `bufferedAmount` bounded with `replica.pause_peer` / `resume_peer`;
- the replica's and the bindings' timers drive heartbeats, digests, liveness and timeouts;
- a link that closes, fails, goes silent or is cut is routine: the replica forgets the
  connection, and the offerer dials again with backoff (the answerer asks it to, via signalling);
  on admission the replica exchanges digests and state, so nothing is lost.

It does not own the signalling connection (a `SignalSender` is passed in, and signals are fed to
`handle_signal`) nor the emulator (changes come in through `local_changes`, and `BytesChanged`
goes out through `on_event`). Time is wall-clock seconds (`time.time`), as the replica's hybrid
clock expects.
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
from typing import Any

from aiortc.exceptions import InvalidAccessError, InvalidStateError
from nacl.signing import SigningKey

from peer.core import codec
from peer.core.binding import (
    Admitted,
    Binding,
    RefusalReason,
    Refused,
    Role,
)
from peer.core.replica import (
    CutPeer,
    Event,
    PeerLeft,
    PeerSilent,
    PeerStatistics,
    Rejected,
    Replica,
)
from peer.core.state import Run
from peer.mesh.webrtc import (
    HIGH_WATER,
    LOW_WATER,
    MAX_MESSAGE,
    IceOptions,
    Link,
    LinkState,
    SignalSender,
    role_towards,
)

log = logging.getLogger(__name__)

RECONNECT_FIRST = 0.2  # seconds before the first redial; doubles per failure
RECONNECT_MAX = 5.0
CONNECT_TIMEOUT = 15.0  # a link not admitted by then is dropped and dialled again
REFUSED_WAIT = 30.0  # a refused peer is not dialled again before this
CUT_WAIT = 30.0  # nor a peer cut off for flooding
MAX_SDP = 16 * 1024
# An honest sender stays well inside the receivers' rate budget (240 messages/s, bursts of 480):
# local changes are published at most PUBLISH_RATE times a second, with bursts of PUBLISH_BURST
# (so a late frame followed by an on-time one is not delayed); changes made while no publication
# is due are coalesced (newest value per byte) into the next batch. At 60 Hz every frame's batch
# goes out at once.
PUBLISH_RATE = 120.0
PUBLISH_BURST = 4.0
# What aiortc raises while applying a session description a peer sent us: a fuzz of mutated
# offers (400 cases) produced AssertionError, ValueError, AttributeError, KeyError and TypeError
# from its SDP parser, besides its own errors. Such a step only ever drops that one link.
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


# ---- events the mesh adds to the replica's ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerAdmitted(Event):
    peer: bytes


@dataclass(frozen=True, slots=True)
class PeerRefused(Event):
    peer: bytes
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Published(Event):
    """Our own changes went out (merged into the replica and sent to every admitted peer)."""

    runs: tuple[Run, ...]


@dataclass(frozen=True, slots=True)
class LinkLost(Event):
    peer: bytes
    reason: str


# ---- per-peer bookkeeping --------------------------------------------------------------------


@dataclass(slots=True)
class LinkStatistics:
    """Per peer connection: the mesh's counters next to the replica's `PeerStatistics`."""

    state: str = "waiting"
    admissions: int = 0
    reconnects: int = 0
    links_lost: int = 0
    refusals: Counter[str] = field(default_factory=Counter)
    cuts: int = 0
    pauses: int = 0
    unsendable: int = 0  # messages dropped because the channel was not open (resynced later)
    last_loss: str = ""
    sync: PeerStatistics | None = None


@dataclass(slots=True)
class _Peer:
    key: bytes
    role: Role
    link: Link | None = None
    binding: Binding | None = None
    admitted: bool = False
    paused: bool = False
    retry_at: float | None = None  # when to dial (offerer) or ask to be dialled (answerer)
    give_up_at: float | None = None  # the current link must be admitted by then
    backoff: float = RECONNECT_FIRST
    last_link_id: int = 0  # the answerer's note of which attempt died, for "restart"
    banned_until: float = 0.0  # refused or cut: no links with this peer before then
    stats: LinkStatistics = field(default_factory=LinkStatistics)


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
        clock: Callable[[], float] = time.time,
        nonces: Callable[[int], bytes] = os.urandom,
        water_marks: tuple[int, int] = (LOW_WATER, HIGH_WATER),
    ) -> None:
        """`water_marks`: a link's buffered bytes above the high mark pause the peer in the
        replica; falling below the low mark resumes it."""
        self.replica = replica
        self.key = bytes(signing_key.verify_key)
        self.room = room
        self._signing_key = signing_key
        self._signals = signals
        self._ice = ice if ice is not None else IceOptions()
        self._room_key = room_key
        self._on_event = on_event
        self._clock = clock
        self._nonces = nonces
        self._low_water, self._high_water = water_marks
        if not 0 < self._low_water < self._high_water:
            raise ValueError("water marks must be 0 < low < high")
        self._peers: dict[bytes, _Peer] = {}
        self._next_link_id = 1
        self._pending: dict[int, int] = {}  # address -> newest value not yet published
        self._pending_written_at: float | None = None  # when the game made the newest of them
        self._publish_at: float | None = None
        self._publish_tokens = PUBLISH_BURST
        self._tokens_at = clock()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: asyncio.TaskGroup | None = None
        self._running = asyncio.Event()
        self._sleeping_until: float | None = None  # the deadline the loop waits for
        self._stopping = False

    # ---- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive timers until `stop()`; every task the mesh starts belongs to this TaskGroup."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            self._running.set()
            try:
                while not self._stopping:
                    self._handle_timers(self._clock())
                    self._wake.clear()
                    deadline = self._sleeping_until = self._next_deadline()
                    delay = None if deadline is None else max(0.0, deadline - self._clock())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
            finally:
                for peer in list(self._peers.values()):
                    self._drop_link(peer, "mesh stopped")
                self._tasks = None

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
        deadlines = [self.replica.get_timer(), self._publish_at]
        for peer in self._peers.values():
            deadlines += [peer.retry_at, peer.give_up_at]
            if peer.binding is not None:
                deadlines.append(peer.binding.get_timer())
        return min((d for d in deadlines if d is not None), default=None)

    def _handle_timers(self, now: float) -> None:
        if self._publish_at is not None and now >= self._publish_at:
            self._publish(now)
        for event in self.replica.handle_timer(now):
            self._handle_event(event)
        for peer in list(self._peers.values()):
            self._peer_timers(peer, now)
        self._flush()

    def _peer_timers(self, peer: _Peer, now: float) -> None:
        if peer.binding is not None:
            refused = peer.binding.handle_timer(now)
            if refused is not None:
                self._refuse(peer, refused)
        if peer.give_up_at is not None and now >= peer.give_up_at:
            self._drop_link(peer, f"not admitted within {CONNECT_TIMEOUT:g} s")
        if peer.retry_at is not None and now >= peer.retry_at:
            peer.retry_at = None
            if peer.role is Role.OFFERER:
                self._dial(peer, now)
            elif peer.link is None:
                # Only the offerer dials; tell it the link we had is gone.
                self._signals.send_signal(peer.key, {"kind": "restart", "link": peer.last_link_id})
                self._schedule_retry(peer, now)

    # ---- roster and signalling -------------------------------------------------------------

    def set_roster(self, keys: Iterable[bytes]) -> None:
        """The room's members as the rendezvous lists them (our own key may be included)."""
        wanted = set(keys) - {self.key}
        now = self._clock()
        for key in set(self._peers) - wanted:
            peer = self._peers.pop(key)
            self._drop_link(peer, "left the room", reconnect=False)
        for key in wanted - set(self._peers):
            peer = self._peers[key] = _Peer(key, role_towards(self.key, key))
            if peer.role is Role.OFFERER:
                peer.retry_at = now
        self._wake.set()
        self._notify()

    def handle_signal(self, sender: bytes, data: Any) -> None:
        """A signalling message relayed from `sender`; anything malformed is logged and dropped."""
        if self._tasks is None:
            log.info("signal from %s while the mesh is not running; dropped", sender.hex()[:8])
            return
        peer = self._peers.get(sender)
        if peer is None or not isinstance(data, dict):
            log.info("signal from %s outside the roster or not an object", sender.hex()[:8])
            return
        kind, link_id, sdp = data.get("kind"), data.get("link"), data.get("sdp")
        if not isinstance(link_id, int) or isinstance(link_id, bool) or not 0 < link_id < 2**53:
            log.info("signal from %s without a valid link id", sender.hex()[:8])
            return
        if kind == "restart":
            self._restart_requested(peer, link_id)
        elif not isinstance(sdp, str) or len(sdp) > MAX_SDP:
            log.info("signal %r from %s without a usable sdp", kind, sender.hex()[:8])
        elif kind == "offer" and peer.role is Role.ANSWERER:
            self._answer(peer, link_id, sdp)
        elif kind == "answer" and peer.role is Role.OFFERER:
            self._accept_answer(peer, link_id, sdp)
        else:
            log.info("unexpected signal %r from %s", kind, sender.hex()[:8])

    def _dial(self, peer: _Peer, now: float) -> None:
        self._drop_link(peer, "redialling", reconnect=False)
        link = self._new_link(peer, self._next_link_id, now)
        self._next_link_id += 1
        self._spawn(self._guard(peer, link, link.offer()))

    def _answer(self, peer: _Peer, link_id: int, sdp: str) -> None:
        if self._clock() < peer.banned_until:
            log.info("ignoring an offer from %s: refused or cut recently", peer.key.hex()[:8])
            return
        self._drop_link(peer, "superseded by a new offer", reconnect=False)
        peer.retry_at = None
        link = self._new_link(peer, link_id, self._clock())
        self._spawn(self._guard(peer, link, link.answer(sdp)))

    def _accept_answer(self, peer: _Peer, link_id: int, sdp: str) -> None:
        link = peer.link
        if link is None or link.link_id != link_id or link.state is not LinkState.CONNECTING:
            log.info("stale answer from %s for link %d", peer.key.hex()[:8], link_id)
            return
        self._spawn(self._guard(peer, link, link.accept_answer(sdp)))

    def _restart_requested(self, peer: _Peer, link_id: int) -> None:
        current = peer.link
        if peer.role is not Role.OFFERER or self._clock() < peer.banned_until:
            return
        if current is None or current.link_id <= link_id:
            self._drop_link(peer, "peer asked to reconnect", reconnect=False)
            peer.retry_at = self._clock()
            self._wake.set()

    def _new_link(self, peer: _Peer, link_id: int, now: float) -> Link:
        link = Link(
            local_key=self.key,
            peer=peer.key,
            link_id=link_id,
            ice=self._ice,
            listener=self,
            signals=self._signals,
            low_water=self._low_water,
        )
        peer.link, peer.binding, peer.admitted = link, None, False
        peer.give_up_at = now + CONNECT_TIMEOUT
        peer.stats.state = "connecting"
        self._wake.set()
        return link

    async def _guard(self, peer: _Peer, link: Link, step: Awaitable[None]) -> None:
        """Run one signalling step of a link; a peer's bad description drops only that link."""
        try:
            await step
        except _SDP_ERRORS as exc:
            log.warning("link %d with %s failed: %s", link.link_id, peer.key.hex()[:8], exc)
            if peer.link is link:
                self._drop_link(peer, f"signalling failed: {exc}")

    # ---- link events (LinkListener) --------------------------------------------------------

    def _current(self, link: Link) -> _Peer | None:
        peer = self._peers.get(link.peer)
        return peer if peer is not None and peer.link is link else None

    def link_open(self, link: Link) -> None:
        peer = self._current(link)
        if peer is None:
            return
        try:
            local_fp, remote_fp = link.fingerprints()
        except ValueError as exc:
            self._drop_link(peer, str(exc))
            return
        now = self._clock()
        peer.stats.state = "binding"
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
        )
        self._send_handshake(peer, codec.Nonce(peer.binding.local_nonce))
        self._wake.set()

    def link_message(self, link: Link, data: bytes) -> None:
        peer = self._current(link)
        if peer is None:
            return
        now = self._clock()
        if peer.admitted:
            for event in self.replica.receive(peer.key, data, now):
                self._handle_event(event)
        elif peer.binding is not None:
            self._bind_message(peer, peer.binding, data)
        self._flush()

    def link_drained(self, link: Link) -> None:
        peer = self._current(link)
        if peer is not None and peer.paused:
            peer.paused = False
            self.replica.resume_peer(peer.key, self._clock())
            self._flush()

    def link_closed(self, link: Link, reason: str) -> None:
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
        try:
            message = codec.decode(data, room=self.room, keys=self._roster_keys())
        except codec.DecodeError as exc:
            reason = (
                RefusalReason.UNKNOWN_KEY if exc.reason == "unknown_sender" else RefusalReason.BAD_MESSAGE
            )
            self._refuse(peer, binding.refuse(reason, str(exc)))
            return
        match message.body:
            case codec.Nonce(nonce):
                proof = binding.receive_nonce(nonce)
                if isinstance(proof, Refused):
                    self._refuse(peer, proof)
                else:
                    self._send_handshake(peer, proof)
            case codec.Proof():
                self._bind_outcome(peer, binding.receive_proof(message.sender, message.body))
            case _:
                kind = type(message.body).__name__
                self._refuse(peer, binding.refuse(RefusalReason.PROTOCOL, f"{kind} before admission"))

    def _roster_keys(self) -> set[bytes]:
        return set(self._peers)

    def _bind_outcome(self, peer: _Peer, outcome: Admitted | Refused) -> None:
        if isinstance(outcome, Refused):
            self._refuse(peer, outcome)
            return
        peer.admitted, peer.give_up_at, peer.backoff = True, None, RECONNECT_FIRST
        peer.stats.state = "admitted"
        peer.stats.admissions += 1
        self.replica.add_peer(peer.key, self._clock())
        log.info("peer %s admitted", peer.key.hex()[:8])
        self._emit(PeerAdmitted(peer.key))

    def _refuse(self, peer: _Peer, refused: Refused) -> None:
        log.warning("refused peer %s: %s (%s)", peer.key.hex()[:8], refused.reason.value, refused.detail)
        peer.stats.refusals[refused.reason.value] += 1
        self._ban(peer, f"refused: {refused.reason.value}", REFUSED_WAIT)
        self._emit(PeerRefused(peer.key, refused.reason.value, refused.detail))

    def _ban(self, peer: _Peer, reason: str, wait: float) -> None:
        self._drop_link(peer, reason, reconnect=False)
        peer.stats.state = "banned"
        peer.banned_until = peer.retry_at = self._clock() + wait

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
        if peer is not None and peer.link is not None:
            log.warning("cutting peer %s off: %s", key.hex()[:8], reason)
            peer.stats.cuts += 1
            self._ban(peer, f"cut: {reason}", CUT_WAIT)

    def _lose(self, key: bytes, reason: str) -> None:
        peer = self._peers.get(key)
        if peer is not None:
            self._drop_link(peer, reason)

    def _drop_link(self, peer: _Peer, reason: str, *, reconnect: bool = True) -> None:
        """Forget the current link (closing it); with `reconnect`, schedule the next attempt."""
        link, was_admitted = peer.link, peer.admitted
        peer.link, peer.binding, peer.admitted, peer.paused = None, None, False, False
        peer.give_up_at = None
        if link is None:
            return
        peer.last_link_id = link.link_id
        if was_admitted:
            self.replica.remove_peer(peer.key)
            peer.stats.links_lost += 1
            peer.stats.last_loss = reason
            log.info("link with %s lost: %s", peer.key.hex()[:8], reason)
            self._emit(LinkLost(peer.key, reason))
        peer.stats.state = "waiting"
        if self._tasks is not None:
            self._spawn(self._guard(peer, link, link.close()))
        if reconnect and not self._stopping:
            peer.stats.reconnects += 1
            self._schedule_retry(peer, self._clock())
        self._notify()

    def _schedule_retry(self, peer: _Peer, now: float) -> None:
        peer.retry_at = now + peer.backoff
        peer.backoff = min(RECONNECT_MAX, peer.backoff * 2)
        self._wake.set()

    # ---- sending ---------------------------------------------------------------------------

    def _flush(self) -> None:
        """Hand the replica's queued messages to the links; pause peers whose channel backs up."""
        for key, data in self.replica.messages_to_send():
            peer = self._peers.get(key)
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

    def local_changes(self, changes: Iterable[Run], written_at: float | None = None) -> None:
        """Changes from our emulator; raises ValueError for bytes outside the shared regions.

        Normally one call per frame, published at once as one signed batch to every admitted
        peer. Calls faster than PUBLISH_RATE are coalesced into the next batch. `written_at` is
        the wall time the game made them (default: now); a coalesced batch takes the latest.
        """
        layout = self.replica.state.layout
        for address, data in changes:
            if not layout.check_run(address, len(data)):
                raise ValueError(f"change at {address:#06x} is outside the shared regions")
            for offset, value in enumerate(data):
                self._pending[address + offset] = value
        now = self._clock()
        written_at = now if written_at is None else written_at
        self._pending_written_at = max(self._pending_written_at or written_at, written_at)
        if self._publish_at is None:
            self._publish(now)

    def _publish(self, now: float) -> None:
        """Publish the pending changes if the pace allows, else schedule when it will."""
        elapsed, self._tokens_at = now - self._tokens_at, now
        self._publish_tokens = min(PUBLISH_BURST, self._publish_tokens + elapsed * PUBLISH_RATE)
        if self._publish_tokens < 1.0:
            self._publish_at = now + (1.0 - self._publish_tokens) / PUBLISH_RATE
            self._wake.set()
            return
        self._publish_at = None
        if not self._pending:
            return
        self._publish_tokens -= 1.0
        runs = _runs(self._pending)
        written_at, self._pending_written_at = self._pending_written_at, None
        self._pending.clear()
        published = self.replica.local_changes(runs, now, written_at)
        self._flush()
        if published:
            self._emit(Published(tuple(published)))

    def send_chat(self, text: str) -> None:
        self.replica.send_chat(text, self._clock())
        self._flush()

    def request_resync(self) -> None:
        self.replica.request_resync(self._clock())
        self._flush()

    def admitted(self) -> set[bytes]:
        return {key for key, peer in self._peers.items() if peer.admitted}

    def link(self, key: bytes) -> Link | None:
        """The current link with a peer (tests use it to send raw bytes or close it)."""
        peer = self._peers.get(key)
        return None if peer is None else peer.link

    def statistics(self) -> dict[bytes, LinkStatistics]:
        sync = self.replica.statistics().peers
        report = {}
        for key, peer in self._peers.items():
            stats = peer.stats
            stats.sync = sync.get(key)
            report[key] = stats
        return report

    def status_line(self) -> str:
        """One line for the peer's status display: each peer's state, RTT and traffic."""
        parts = []
        for key, stats in sorted(self.statistics().items()):
            part = f"{key.hex()[:6]} {stats.state}"
            sync = stats.sync
            if sync is not None and stats.state == "admitted":
                rtt = "?" if sync.rtt is None else f"{sync.rtt * 1000:.1f}ms"
                part += f" rtt {rtt} out {sync.writes_sent}B in {sync.writes_received}B"
                rejected = sum(sync.rejections.values())
                part += f" rejected {rejected}" if rejected else ""
            part += f" lost {stats.links_lost}" if stats.links_lost else ""
            parts.append(part)
        return f"{len(self.admitted())}/{len(self._peers)} peers" + (": " if parts else "") + "; ".join(parts)

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


def _runs(values: dict[int, int]) -> list[Run]:
    """Byte values by address as runs of consecutive addresses."""
    runs: list[tuple[int, bytearray]] = []
    for address in sorted(values):
        if runs and runs[-1][0] + len(runs[-1][1]) == address:
            runs[-1][1].append(values[address])
        else:
            runs.append((address, bytearray([values[address]])))
    return [(address, bytes(data)) for address, data in runs]
