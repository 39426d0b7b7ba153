"""The sans-I/O sync engine of one room: what to send, what to accept, what changed.

A `Replica` owns this peer's `SharedState` and clock and one `_Link` per admitted peer. The mesh
adapter feeds it bytes and time and drains `messages_to_send()`; the peer program feeds it local
changes and applies the `BytesChanged` events to the emulator. Nothing here does I/O or reads a clock.

Two clocks come in, as aioquic's `now` does: `now`, monotonic seconds, runs every timer (heartbeats,
digests, silence, rate budgets), so a wall-clock step (NTP, a laptop waking up) neither freezes
nor drops a link; `wall`, seconds since the Unix epoch, is used only where the room needs a shared
notion of time: Lamport stamps (`clock`), the bound on values from the future, and the heartbeat's
`sent_ms` from which a peer estimates our clock skew. Methods that need it take `wall=` by name.

Rules applied to everything a peer sends, in this order (cheap checks before the signature check,
because a forged signature costs as much to reject as a good one to accept):
1. the sender must be admitted, and within its rate budget (token bucket, `RATE_PER_SECOND`);
   a peer that keeps flooding gets a `CutPeer` event;
2. `codec.decode` checks size, sender and signature, then parses;
3. per link, sequence numbers: a duplicate (same seq, same signature) is dropped; the same seq with a
   different message is a forgery (equivocation) and is refused and reported; a gap means messages
   were lost, so this replica asks the peer for its full state;
4. writes and patches must lie inside the shared regions (bytes outside counters, totals and
   contributions at a counter's first address) and carry Lamport values not too far ahead
   of this replica's wall clock (see `clock` for why that bound is the same on every replica);
   a message that breaks either rule is refused whole, never applied in part.

Counters (`add` regions): this replica's own slot is (its key, its session); a local delta is
folded into that slot's total under a new stamp and the new total is published; a peer's batch
carries its totals, merged into the slot (its key, the session in its header). See `merge`.
Each refusal is counted under its reason in `statistics()` and reported as a `Rejected` event.

Authorship (protocol 3): a local write is signed once as a `SignedBatch` and that signature goes
with it everywhere: to every peer, into full state, repair and catch-up patches, onto the disk. The
state is the set of signed batches that still back a current byte (see `state`); a patch carries
them as their authors signed them, and each one is checked against its author's key, which must be
a member's (`members`: this peer, every peer ever added, every key the roster ever listed, and the
authors of what was stored; a departed member's writes stay valid). A batch that fails is refused
alone (the rest of the patch is merged) and counted against the sender, so a member can pass on
other members' writes but never change them or credit bytes to anyone else.

State exchange: when a peer is added (first contact or reconnect) both sides send their full state,
split into patches that fit one message; merging is idempotent and commutative, so both sending at
once is harmless and nothing depends on history. Every `DIGEST_INTERVAL` seconds each side sends a
`Digest` (hash of all bytes and stamps, plus its highest Lamport value). A receiver whose digest differs:
- if the highest values differ, the other side is behind or writes are in flight: it sends just the
  entries newer than the other's highest value (cheap, usually a few bytes);
- if the highest values are equal, the replicas truly diverged: it sends its full state and counts a
  repair. Any divergence is therefore gone within two digest rounds.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from games.definition import Region
from peer.core import codec
from peer.core import merge as rules
from peer.core.clock import HybridClock, is_too_far_ahead, wall_ms
from peer.core.state import NO_WRITER, Delta, Layout, Run, SharedState, SignedBatch

HEARTBEAT_INTERVAL = 1.0
SILENT_AFTER = 5.0
DIGEST_INTERVAL = 3.0
RATE_PER_SECOND = 240.0  # four times one message per 60 Hz frame, plus room for state exchange
RATE_BURST = 480.0
# Flood strikes: every rate-limited message adds one, and FLOOD_LEAK are forgiven per second, so a
# burst is merely throttled while sustained flooding (even at a few times the rate, which refilled
# tokens would hide from a count "in a row") reaches CUT_AFTER_REJECTIONS within a second or so.
CUT_AFTER_REJECTIONS = 200
FLOOD_LEAK = 50.0
BEATS_KEPT = 8  # our heartbeats remembered to time their echoes on the monotonic clock
SEQ_WINDOW = 512  # how many recent signatures per link are kept to spot duplicates and forgeries
PATCH_BUDGET = 48 * 1024  # bytes of signed batches per state patch message, well under 64 KiB
BATCH_BUDGET = 32 * 1024  # bytes of runs per local signed batch, so that any batch fits in a patch


# ---- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of everything a replica reports."""


@dataclass(frozen=True, slots=True)
class BytesChanged(Event):
    """Remote writes changed these shared bytes: write them into the emulator, and add `deltas`
    to its counters (a counter is never written whole: the game may have counted meanwhile)."""

    peer: bytes
    changes: tuple[Run, ...]
    deltas: tuple[Delta, ...] = ()


@dataclass(frozen=True, slots=True)
class LocalOutcome:
    """What `Replica.local_changes` did: the byte runs and counter totals it published, and what
    the emulator must be given so that it shows the room's merge (`corrections`: bytes the
    game wrote that lost a join; `deltas`: how far a saturated counter moved otherwise)."""

    runs: tuple[Run, ...] = ()
    totals: tuple[tuple[int, int], ...] = ()
    corrections: tuple[Run, ...] = ()
    deltas: tuple[Delta, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.runs or self.totals)


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    """Bytes or only their stamps changed: save `state.take_dirty()` (a new stamp on an unchanged
    value comes with no `BytesChanged`, yet the disk must hold it)."""


@dataclass(frozen=True, slots=True)
class Rejected(Event):
    peer: bytes
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CutPeer(Event):
    """The peer misbehaves beyond tolerance: close its connection."""

    peer: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class PeerSilent(Event):
    """Nothing heard from the peer for `SILENT_AFTER` seconds: treat its connection as dead."""

    peer: bytes


@dataclass(frozen=True, slots=True)
class PeerLeft(Event):
    peer: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class ChatReceived(Event):
    peer: bytes
    text: str


@dataclass(frozen=True, slots=True)
class FullStateReceived(Event):
    """The last part of a peer's full state was merged: this replica now knows the room."""

    peer: bytes


@dataclass(frozen=True, slots=True)
class Repaired(Event):
    """A digest mismatch with this peer was found and full state was sent to it."""

    peer: bytes


# ---- statistics -------------------------------------------------------------------------------


@dataclass(slots=True)
class PeerStatistics:
    rtt: float | None = None
    skew: float | None = None  # the peer's wall clock minus ours, seconds (from heartbeats)
    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    writes_sent: int = 0
    writes_received: int = 0
    repairs: int = 0
    resyncs_requested: int = 0
    rejections: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class ReplicaStatistics:
    peers: dict[bytes, PeerStatistics]
    rejections: Counter[str]
    local_batches: int
    max_lamport: int


# ---- per-peer link ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Link:
    peer: bytes
    added_at: float
    next_seq: int = 1
    session: int | None = None
    highest_seq: int = 0
    recent: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    last_heard: float = 0.0
    last_heartbeat: float = float("-inf")
    next_digest: float = 0.0
    echo: tuple[int, float] | None = None  # their last sent_ms and when (monotonic) we received it
    beats: deque[tuple[int, float]] = field(default_factory=deque)  # our recent (sent_ms, monotonic)
    silent_reported: bool = False
    connected: bool = True
    paused: bool = False
    dirty: set[int] = field(default_factory=set)
    dirty_counters: set[int] = field(default_factory=set)
    tokens: float = RATE_BURST
    tokens_at: float = 0.0
    flood_strikes: float = 0.0
    flood_at: float = 0.0
    cut: bool = False
    stats: PeerStatistics = field(default_factory=PeerStatistics)

    def take_token(self, now: float) -> bool:
        self.tokens = min(RATE_BURST, self.tokens + (now - self.tokens_at) * RATE_PER_SECOND)
        self.tokens_at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class Replica:
    """One room's replica of the shared bytes, and the rules for talking about them."""

    def __init__(
        self,
        *,
        signing_key: SigningKey,
        room: str,
        regions: Sequence[Region],
        session: int,
        now: float,
        state: SharedState | None = None,
    ) -> None:
        self.signing_key = signing_key
        self.key = bytes(signing_key.verify_key)
        self.room = room
        self.session = session
        self.state = state if state is not None else SharedState(Layout(regions))
        self.clock = HybridClock(self.state.max_lamport)
        self.links: dict[bytes, _Link] = {}
        self.members: set[bytes] = {self.key} | {b.author for b in self.state.batches.values()}
        """Keys whose signed batches are accepted: never shrinks (see the module docstring)."""
        self.rejections: Counter[str] = Counter()
        self.local_batches = 0
        self._outbox: list[tuple[bytes, bytes]] = []

    # ---- peers --------------------------------------------------------------------------------

    def add_peer(self, peer: bytes, now: float) -> None:
        """Start syncing with an admitted peer: exchange digests, then full state if they differ."""
        if peer == self.key:
            raise ValueError("a replica cannot add itself as a peer")
        self.members.add(peer)
        link = self.links.get(peer)
        if link is None:
            link = self.links[peer] = _Link(peer, added_at=now, tokens_at=now)
        link.last_heard, link.silent_reported = now, False
        link.connected, link.paused, link.cut = True, False, False
        link.flood_strikes = 0.0
        link.dirty.clear()
        link.dirty_counters.clear()
        link.next_digest = now + DIGEST_INTERVAL
        self._send_full_state(link, now)

    def add_members(self, keys: Iterable[bytes]) -> None:
        """Keys the room's roster lists: their signed writes are accepted from now on."""
        self.members.update(keys)

    def remove_peer(self, peer: bytes) -> None:
        """Forget a peer's connection; its sequence numbers are kept in case it comes back."""
        link = self.links.get(peer)
        if link is not None:
            link.connected = False  # nothing is sent or accepted until `add_peer` again
            link.dirty.clear()
            link.dirty_counters.clear()

    def is_connected(self, peer: bytes) -> bool:
        link = self.links.get(peer)
        return link is not None and link.connected

    def pause_peer(self, peer: bytes) -> None:
        """The peer's channel is backed up: coalesce its writes until `resume_peer`."""
        link = self.links.get(peer)
        if link is not None:
            link.paused = True

    def resume_peer(self, peer: bytes, now: float) -> None:
        link = self.links.get(peer)
        if link is None or not link.paused or not link.connected:
            return
        link.paused = False
        if link.dirty or link.dirty_counters:
            backing = self.state.batches_backing(link.dirty, link.dirty_counters)
            self._send_batches(link, backing, full=False, now=now)
            link.dirty.clear()
            link.dirty_counters.clear()

    # ---- local side ---------------------------------------------------------------------------

    def local_changes(
        self,
        changes: Iterable[Run],
        now: float,
        *,
        wall: float,
        written_at: float | None = None,
        deltas: Iterable[Delta] = (),
    ) -> LocalOutcome:
        """Publish changes made by this peer's game: bytes outside counters, and how much the game
        changed counters (`deltas`, by first address); returns what was published.

        `written_at` is the wall time the game made them (the watcher's check), `wall` the wall
        time they are published: the stamp is built from the former (see `clock` for why)."""
        changes = list(changes)
        runs = [run for run in self._differing(changes) if run[1]]
        deltas = [(first, delta) for first, delta in deltas if delta]
        for first, _ in deltas:
            if first not in self.state.layout.counters:
                raise ValueError(f"local change at {first:#06x} is not a counter")
        if not runs and not deltas:
            return LocalOutcome(corrections=tuple(self._corrections(changes)))
        lamport = self.clock.stamp(wall if written_at is None else written_at, wall)
        runs.sort()
        slot = (self.key, self.session)
        totals = [(first, self.state.total(first, slot) + delta) for first, delta in deltas]
        moved: dict[int, int] = {}
        for group, counted in _batch_groups(runs, totals):
            signed = codec.sign_batch(
                self.signing_key,
                room=self.room,
                session=self.session,
                lamport=lamport,
                runs=group,
                totals=counted,
            )
            for first, change in self.state.apply_batch(signed)[1]:
                moved[first] = moved.get(first, 0) + change
            self._publish(signed, now)
        self.local_batches += 1
        corrections = [
            (first, moved.get(first, 0) - delta) for first, delta in deltas if moved.get(first, 0) != delta
        ]
        return LocalOutcome(tuple(runs), tuple(totals), tuple(self._corrections(changes)), tuple(corrections))

    def _publish(self, signed: SignedBatch, now: float) -> None:
        batch = codec.WriteBatch.of(signed)
        for link in self._open_links():
            if link.paused:
                link.dirty.update(
                    a for address, data in signed.runs for a in range(address, address + len(data))
                )
                link.dirty_counters.update(first for first, _ in signed.totals)
            else:
                self._send(link, batch, now)
                link.stats.writes_sent += signed.size + len(signed.totals)

    def _corrections(self, changes: list[Run]) -> list[Run]:
        """Bytes the game wrote that the room's merge did not keep (a lost join): the emulator
        must show the room's."""
        layout, values = self.state.layout, self.state.values
        runs: list[tuple[int, bytearray]] = []
        for address, data in changes:
            for offset, value in enumerate(data):
                i = layout.index(address + offset)
                if layout.rules[i] in rules.JOINS and values[i] != value:
                    _append_byte(runs, address + offset, values[i])
        return [(address, bytes(data)) for address, data in runs]

    def _differing(self, changes: Iterable[Run]) -> list[Run]:
        """Validate local changes and keep the bytes that would change the room's.

        A byte nobody has written yet (`NO_WRITER`) always counts: the replica's 0 there is a
        placeholder, not the room's value, so the game's own value must be published. A byte
        under a join rule counts only when the join moves (a `max` byte the game lowered does not)."""
        layout, values, writers = self.state.layout, self.state.values, self.state.writers
        runs: list[tuple[int, bytearray]] = []
        for address, data in changes:
            if not layout.check_bytes(address, len(data)):
                raise ValueError(f"local change at {address:#06x} is outside the shared bytes")
            for offset, value in enumerate(data):
                i = layout.index(address + offset)
                if writers[i] != NO_WRITER and layout.rules[i] in rules.JOINS:
                    value = rules.join(layout.rules[i], values[i], value)
                if values[i] != value or writers[i] == NO_WRITER:
                    _append_byte(runs, address + offset, value)
        return [(address, bytes(data)) for address, data in runs]

    def unwritten_addresses(self) -> list[int]:
        """Shared addresses no peer has written yet (on arming, the game's values fill them)."""
        return [
            a for a, w in zip(self.state.layout.addresses, self.state.writers, strict=True) if w == NO_WRITER
        ]

    def send_chat(self, text: str, now: float) -> None:
        chat = codec.Chat(text)  # raises ValueError when too long
        for link in self._open_links():
            self._send(link, chat, now)

    def request_resync(self, now: float) -> None:
        """Ask every peer for its full state (the manual resync)."""
        for link in self._open_links():
            link.stats.resyncs_requested += 1
            self._send(link, codec.ResyncRequest(), now)

    def say_goodbye(self, reason: str, now: float) -> None:
        for link in self._open_links():
            self._send(link, codec.Bye(reason[: codec.MAX_TEXT_BYTES // 4]), now)

    def messages_to_send(self) -> list[tuple[bytes, bytes]]:
        """Drain what must go out, as (peer key, message bytes), in order."""
        out, self._outbox = self._outbox, []
        return out

    # ---- timers -------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        deadlines = []
        for link in self._open_links():
            deadlines += [link.last_heartbeat + HEARTBEAT_INTERVAL, link.next_digest]
            if not link.silent_reported:
                deadlines.append(link.last_heard + SILENT_AFTER)
        return min(deadlines, default=None)

    def handle_timer(self, now: float, *, wall: float) -> list[Event]:
        events: list[Event] = []
        for link in self._open_links():
            if now - link.last_heartbeat >= HEARTBEAT_INTERVAL:
                self._send_heartbeat(link, now, wall)
            if now >= link.next_digest:
                self._send_digest(link, now)
            if not link.silent_reported and now - link.last_heard >= SILENT_AFTER:
                link.silent_reported = True
                events.append(PeerSilent(link.peer))
        return events

    # ---- receiving ----------------------------------------------------------------------------

    def receive(self, peer: bytes, data: bytes, now: float, *, wall: float) -> list[Event]:
        link = self.links.get(peer)
        if link is None or not link.connected:
            return [self._reject(link, peer, "not_admitted")]
        if not link.take_token(now):
            return self._rate_limited(link, now)
        try:
            message = codec.decode(data, room=self.room, keys=(peer,), max_runs=self.state.layout.size)
        except codec.DecodeError as exc:
            return [self._reject(link, peer, exc.reason, str(exc))]
        link.last_heard, link.silent_reported = now, False
        link.stats.messages_received += 1
        link.stats.bytes_received += len(data)
        verdict = self._check_sequence(link, message, now)
        if verdict is not None:
            return verdict
        return self._dispatch(link, message.body, now, wall)

    def _rate_limited(self, link: _Link, now: float) -> list[Event]:
        leaked = max(0.0, link.flood_strikes - (now - link.flood_at) * FLOOD_LEAK)
        link.flood_strikes, link.flood_at = leaked + 1.0, now
        events: list[Event] = [self._reject(link, link.peer, "rate_limited")]
        if link.flood_strikes >= CUT_AFTER_REJECTIONS and not link.cut:
            link.cut = True  # reported once per connection; `add_peer` starts afresh
            events.append(CutPeer(link.peer, "flooding"))
        return events

    def _check_sequence(self, link: _Link, message: codec.Decoded, now: float) -> list[Event] | None:
        """None when the message is new and in order enough to process; else the events."""
        if message.seq == 0:
            return [self._reject(link, link.peer, "handshake_after_admission")]
        if message.session != link.session:
            link.session, link.highest_seq = message.session, 0  # the peer restarted
            link.recent.clear()
        seen = link.recent.get(message.seq)
        if seen is not None:
            if seen == message.signature:
                link.stats.rejections["duplicate"] += 1
                return []
            return [self._reject(link, link.peer, "forgery", f"two messages with seq {message.seq}")]
        if message.seq <= link.highest_seq - SEQ_WINDOW:
            return [self._reject(link, link.peer, "stale", f"seq {message.seq}")]
        if link.highest_seq and message.seq > link.highest_seq + 1:
            link.stats.resyncs_requested += 1  # messages were lost on the way
            self._send(link, codec.ResyncRequest(), now)
        link.highest_seq = max(link.highest_seq, message.seq)
        link.recent[message.seq] = message.signature
        while len(link.recent) > SEQ_WINDOW:
            link.recent.popitem(last=False)
        return None

    def _dispatch(self, link: _Link, body: codec.Body, now: float, wall: float) -> list[Event]:
        match body:
            case codec.WriteBatch():
                return self._receive_batch(link, body, wall)
            case codec.StatePatch():
                return self._receive_patch(link, body, wall)
            case codec.Digest():
                return self._receive_digest(link, body, now)
            case codec.ResyncRequest():
                self._send_full_state(link, now)
                return []
            case codec.Heartbeat():
                self._receive_heartbeat(link, body, now, wall)
                return []
            case codec.Chat(text):
                return [ChatReceived(link.peer, text)]
            case codec.Bye(reason):
                self.remove_peer(link.peer)
                return [PeerLeft(link.peer, reason)]
            case _:
                return [self._reject(link, link.peer, "handshake_after_admission")]

    def _receive_batch(self, link: _Link, batch: codec.WriteBatch, wall: float) -> list[Event]:
        problem = self._check_batch(batch.lamport, batch.runs, batch.totals, wall)
        if problem:
            return [self._reject(link, link.peer, *problem)]
        try:
            signed = codec.batch_of(link.peer, link.session or 0, batch, room=self.room)
        except codec.DecodeError as exc:
            return [self._reject(link, link.peer, exc.reason, str(exc))]
        self.clock.observe(batch.lamport, wall)
        link.stats.writes_received += signed.size + len(batch.totals)
        changes, deltas = self.state.apply_batch(signed)
        return self._merged(link, changes, deltas)

    def _check_batch(
        self, lamport: int, runs: Iterable[Run], totals: Iterable[tuple[int, int]], wall: float
    ) -> tuple[str, str] | None:
        problem = self._check_stamped_runs(((a, d, lamport) for a, d in runs), wall)
        return problem or self._check_counters((a for a, _ in totals), lamport, wall)

    def _merged(self, link: _Link, changes: list[Run], deltas: list[Delta]) -> list[Event]:
        events: list[Event] = []
        if changes or deltas:
            events.append(BytesChanged(link.peer, tuple(changes), tuple(deltas)))
        if self.state.has_dirty:
            events.append(StateChanged())
        return events

    def _receive_patch(self, link: _Link, patch: codec.StatePatch, wall: float) -> list[Event]:
        """Merge every signed batch of the patch that verifies and keeps the rules; each one that
        does not is refused alone and counted against the sender."""
        events: list[Event] = []
        changes: list[Run] = []
        deltas: list[Delta] = []
        for raw in patch.batches:
            try:
                signed = codec.open_batch(
                    raw, room=self.room, authors=self.members, max_runs=self.state.layout.size
                )
            except codec.DecodeError as exc:
                events.append(self._reject(link, link.peer, exc.reason, str(exc)))
                continue
            problem = self._check_batch(signed.lamport, signed.runs, signed.totals, wall)
            if problem:
                events.append(self._reject(link, link.peer, *problem))
                continue
            self.clock.observe(signed.lamport, wall)
            changed, moved = self.state.apply_batch(signed)
            changes += changed
            deltas += moved
        events += self._merged(link, changes, deltas)
        if patch.full and patch.part == patch.parts - 1:
            events.append(FullStateReceived(link.peer))
        return events

    def _check_stamped_runs(
        self, runs: Iterable[tuple[int, bytes, int]], wall: float
    ) -> tuple[str, str] | None:
        for address, data, lamport in runs:
            if not self.state.layout.check_bytes(address, len(data)):
                return "outside_regions", f"{len(data)} bytes at {address:#06x}"
            if is_too_far_ahead(lamport, wall):
                return "lamport_ahead", f"Lamport {lamport} is beyond this peer's clock bound"
        return None

    def _check_counters(self, firsts: Iterable[int], lamport: int, wall: float) -> tuple[str, str] | None:
        for first in firsts:
            if first not in self.state.layout.counters:
                return "outside_regions", f"no counter at {first:#06x}"
        if is_too_far_ahead(lamport, wall):
            return "lamport_ahead", f"Lamport {lamport} is beyond this peer's clock bound"
        return None

    def _receive_digest(self, link: _Link, digest: codec.Digest, now: float) -> list[Event]:
        if digest.digest == self.state.digest():
            return []
        if digest.max_lamport != self.state.max_lamport:
            newer = self.state.signed_batches(newer_than=digest.max_lamport)
            if newer:
                self._send_batches(link, newer, full=False, now=now)
            return []
        link.stats.repairs += 1
        self._send_full_state(link, now)
        return [Repaired(link.peer)]

    def _receive_heartbeat(self, link: _Link, beat: codec.Heartbeat, now: float, wall: float) -> None:
        link.echo = (beat.sent_ms, now)
        link.stats.skew = beat.sent_ms / 1000 - wall
        # The echo names one of our heartbeats by its wall `sent_ms`; the round trip is timed on
        # the monotonic clock from when we sent that one (a wall step in between changes nothing).
        sent_at = next((at for sent_ms, at in link.beats if sent_ms == beat.echo_ms), None)
        if beat.echo_ms and sent_at is not None:
            rtt = now - sent_at - beat.held_ms / 1000
            if rtt >= 0:
                link.stats.rtt = rtt

    # ---- sending ------------------------------------------------------------------------------

    def _open_links(self) -> list[_Link]:
        return [link for link in self.links.values() if link.connected]

    def _send(self, link: _Link, body: codec.Body, now: float) -> None:
        message = codec.encode(
            body, signing_key=self.signing_key, room=self.room, session=self.session, seq=link.next_seq
        )
        link.next_seq += 1
        link.stats.messages_sent += 1
        link.stats.bytes_sent += len(message)
        self._outbox.append((link.peer, message))

    def _send_heartbeat(self, link: _Link, now: float, wall: float) -> None:
        echo_ms = held_ms = 0
        if link.echo is not None:
            echo_ms, held_ms = link.echo[0], int((now - link.echo[1]) * 1000)
        link.last_heartbeat = now
        sent_ms = wall_ms(wall)
        link.beats.append((sent_ms, now))
        while len(link.beats) > BEATS_KEPT:
            link.beats.popleft()
        self._send(link, codec.Heartbeat(sent_ms, echo_ms, max(0, held_ms)), now)

    def _send_digest(self, link: _Link, now: float) -> None:
        link.next_digest = now + DIGEST_INTERVAL
        self._send(link, codec.Digest(self.state.digest(), self.state.max_lamport), now)

    def _send_full_state(self, link: _Link, now: float) -> None:
        self._send_batches(link, self.state.signed_batches(), full=True, now=now)

    def _send_batches(self, link: _Link, batches: list[SignedBatch], *, full: bool, now: float) -> None:
        parts = split_batches([b.raw for b in batches], PATCH_BUDGET)
        for number, part in enumerate(parts):
            self._send(link, codec.StatePatch(full, number, len(parts), tuple(part)), now)

    def _reject(self, link: _Link | None, peer: bytes, reason: str, detail: str = "") -> Rejected:
        self.rejections[reason] += 1
        if link is not None:
            link.stats.rejections[reason] += 1
        return Rejected(peer, reason, detail)

    # ---- introspection ------------------------------------------------------------------------

    def statistics(self) -> ReplicaStatistics:
        return ReplicaStatistics(
            peers={peer: link.stats for peer, link in self.links.items()},
            rejections=Counter(self.rejections),
            local_batches=self.local_batches,
            max_lamport=self.state.max_lamport,
        )


def _append_byte(runs: list[tuple[int, bytearray]], address: int, value: int) -> None:
    if runs and runs[-1][0] + len(runs[-1][1]) == address:
        runs[-1][1].append(value)
    else:
        runs.append((address, bytearray([value])))


def split_batches(raws: list[bytes], budget: int) -> list[list[bytes]]:
    """Group signed batches into parts of at most `budget` bytes (each fits alone); never empty."""
    parts: list[list[bytes]] = [[]]
    size = 0
    for raw in raws:
        cost = len(raw) + 4
        if size + cost > budget and parts[-1]:
            parts.append([])
            size = 0
        parts[-1].append(raw)
        size += cost
    return parts


def _batch_groups(
    runs: list[Run], totals: list[tuple[int, int]]
) -> Iterable[tuple[tuple[Run, ...], tuple[tuple[int, int], ...]]]:
    """Cut one local write into batches of at most `BATCH_BUDGET` bytes of runs (totals go with
    the first), so that every signed batch fits in one patch message."""
    group: list[Run] = []
    size = 0
    first = True
    for address, data in runs:
        for offset in range(0, len(data), BATCH_BUDGET):
            chunk = data[offset : offset + BATCH_BUDGET]
            if size + len(chunk) > BATCH_BUDGET and group:
                yield tuple(group), tuple(totals) if first else ()
                group, size, first = [], 0, False
            group.append((address + offset, chunk))
            size += len(chunk)
    if group or (first and totals):
        yield tuple(group), tuple(totals) if first else ()
