"""The sans-I/O sync engine of one room: what to send, what to accept, what changed.

A `Replica` owns this peer's `SharedState` and clock and one `_PeerSync` per admitted peer. The mesh
adapter feeds it bytes and time and drains `messages_to_send()`; the peer program feeds it local
changes and applies the `BytesChanged` events to the emulator. Nothing here does I/O or reads a clock.

Two clocks come in, as aioquic's `now` does: `now`, monotonic seconds, runs every timer (heartbeats,
digests, silence, rate budgets), so a wall-clock step (NTP, a laptop waking up) neither freezes
nor drops a link; `wall`, seconds since the Unix epoch, is used only where the room needs a shared
notion of time: Lamport stamps (`clock`), the bound on values from the future, and the heartbeat's
`sent_ms` from which a peer estimates our clock skew. Methods that need it take `wall=` by name.

Rules applied to everything a peer sends, in this order (cheap checks before the signature check,
because a forged signature costs as much to reject as a good one to accept):
1. the sender must be admitted, and within its rate budget (token bucket, `RATE_PER_SECOND`),
   charged for the work a message asks for (its bytes, runs and signatures), not per message;
   every refusal is a strike, and a peer that keeps flooding or sending what is refused gets
   a `CutPeer` event; chat has its own, smaller budget (`CHAT_PER_SECOND`);
2. `codec.decode` checks size, sender and signature, then parses;
3. per link, sequence numbers: a duplicate (same seq, same signature) is dropped; the same seq with a
   different message is a forgery (equivocation) and is refused and reported; a gap means messages
   were lost, so this replica asks the peer for its full state;
4. writes and patches must lie inside the shared regions (bytes outside counters, totals and
   contributions at a counter's first address) and carry Lamport values not too far ahead
   of this replica's wall clock (see `clock` for why that bound is the same on every replica);
   a message that breaks either rule is refused whole, never applied in part.

Counters (`add` regions): this replica's own slot is its key's; its total is its *base* (the newest
total of its own from an earlier session: the disk's, or a newer one the room passes on, issue 30
F3) plus what this session's game changed, modulo the counter's modulus; each local delta is
published as that new total under a new stamp, and so is a new base that comes in after this
session published. A total of a later session of its own key (its restart, while this process
still runs) makes this one publish no more totals there. A peer's batch carries its totals,
merged into the author's slot; a total outside 0..M-1 (the counter's modulus) is refused as
`total_out_of_range` (F4). See `merge`.
Each refusal is counted under its reason in `statistics()` and reported as a `Rejected` event.

Authorship (protocol 3): a local write is signed once as a `SignedBatch` and that signature goes
with it everywhere: to every peer, into full state, repair and catch-up patches, onto the disk. The
state is the set of signed batches that still back a current byte (see `state`); a patch carries
them as their authors signed them, and each one is checked against its author's key. A batch that
fails is refused alone (the rest of the patch is merged) and counted against the sender, so a
member can pass on other members' writes but never change them. Its author must be a member
(`authors`: this peer, every peer admitted, the keys the rendezvous named lately, the authors of
what was stored, and a few authors a member vouched for by holding their batches; a departed
member's writes stay valid); a batch by an author we cannot judge yet is held aside, neither
merged nor counted against the sender, until its author is (`peer.core.sync.authors`).

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

import heapq
import itertools
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from games.definition import Region
from peer.core.sync import codec
from peer.core.sync import merge as rules
from peer.core.sync.authors import Authors
from peer.core.sync.clock import (
    MAX_AHEAD_MS,
    HybridClock,
    hold_allowance,
    hold_or_refuse,
    is_too_far_ahead,
    wall_ms,
)
from peer.core.sync.state import NO_WRITER, Delta, Held, Layout, Run, SharedState, SignedBatch

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 1.0
SILENT_AFTER = 5.0
DIGEST_INTERVAL = 3.0
RATE_PER_SECOND = 240.0  # four times one message per 60 Hz frame, plus room for state exchange
RATE_BURST = 480.0
# Work, not messages, is charged (F2): a message costs one token, plus one per BYTES_PER_TOKEN of
# its size past FREE_BYTES (charged before it is decoded, so a refused heavy message costs as much
# as a good one),
# plus one per RUNS_PER_TOKEN runs and per BATCHES_PER_TOKEN signed batches it carries (charged
# once it is parsed; the bucket may go into debt). A frame's write (tens of bytes, a few runs)
# costs about 1; a 64 KiB batch about 130, so a member can push at most ~2 of those a second.
BYTES_PER_TOKEN = 512
FREE_BYTES = 256
RUNS_PER_TOKEN = 16
BATCHES_PER_TOKEN = 4
# A full state this replica asked for (on adding a peer, or by a resync request) is real work it
# wants done: the link is credited, once per request, what the largest full state can hold costs
# (`full_state_cost`: every byte backed by as many batches as its rule keeps, two per counter and
# member (its slot and its carried total), or what our own state holds if more, each batch about
# STATE_BATCH_BYTES), beyond the burst, never more than MAX_STATE_CREDIT (issue 30, F3).
STATE_BATCH_BYTES = 128
JOIN_BACKERS = 9  # the most batches a `bit-or`/`bit-and` byte keeps (`state._needed`)
MAX_STATE_CREDIT = 20_000.0  # tokens: about 5 MB of state (batches of 128 bytes), many full layouts
REQUEST_INTERVAL = 5.0  # at most one resync request per peer per this many seconds
# Full state on a peer's demand (a resync request, a digest that shows divergence) is sent at most
# once per FULL_STATE_INTERVAL per peer (F5); demands in between are merged into one answer sent
# when the interval is over, never while the peer's channel is paused, and its bytes are charged to
# the requester: the next answer waits at least as long as those bytes take at
# FULL_STATE_BYTES_PER_SECOND (charging its message budget instead would throttle an honest peer's
# writes after a large resync).
FULL_STATE_INTERVAL = 5.0
FULL_STATE_BYTES_PER_SECOND = 32 * 1024
CHAT_PER_SECOND = 2.0  # chat has a lane of its own (F3): a few lines a second, in small bursts
CHAT_BURST = 5.0
# Strikes: every refusal adds some (a rate-limited message its cost in tokens, any other refusal
# one), and FLOOD_LEAK are forgiven per second, so a burst is merely throttled while sustained
# flooding or a stream of bad messages reaches CUT_AFTER_REJECTIONS within a second or so.
CUT_AFTER_REJECTIONS = 200
FLOOD_LEAK = 50.0
RECLAIM_INTERVAL = 3.0  # words for authors that back nothing are taken back at most this often
HELD_PER_PEER = 256  # batches from the near future held per peer (see `clock`); more are dropped
SENDER_SLACK_MS = 2_000  # a sender's stamp may pass its own bound by this (RTT, clock noise)
ROSTER_GRACE = 3.0  # rosters change at slightly different times on each peer; longer is a split
BEATS_KEPT = 8  # our heartbeats remembered to time their echoes on the monotonic clock
SEQ_WINDOW = 512  # how many recent signatures per link are kept to spot duplicates and forgeries
PATCH_BUDGET = 48 * 1024  # bytes of signed batches per state patch message, well under 64 KiB
BATCH_BUDGET = 32 * 1024  # encoded bytes of runs per local signed batch: any batch fits in a patch
RUN_OVERHEAD = 4  # a run's address and length on the wire (`codec`)


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
    """The last part of a peer's full state was merged. `room_state`: this replica may now take
    its state for the room's (see `Replica.has_room_state`); a brand-new member's (possibly empty)
    state alone is not that."""

    peer: bytes
    room_state: bool = True


@dataclass(frozen=True, slots=True)
class RosterDiffers(Event):
    """The peer's heartbeats have named another roster than ours for `ROSTER_GRACE` seconds: the
    rendezvous may be giving members different rosters (splitting the room). `agree` is True when
    the two rosters are the same again after such a report."""

    peer: bytes
    agree: bool = False


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
    shared_bytes_sent: int = 0
    shared_bytes_received: int = 0
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
class _PeerSync:
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
    asked_at: float = float("-inf")  # when we last asked this peer for its full state
    awaiting: bool = False  # asked, and the last part of its full state has not come yet
    credited_at: float = float("-inf")
    chat_tokens: float = CHAT_BURST
    chat_at: float = 0.0
    state_credit: float = 0.0  # tokens only state patches may spend (see `STATE_BATCH_BYTES`)
    full_next_at: float = float("-inf")  # when this peer may next have our full state
    full_due: bool = False  # the peer asked for our full state and is waiting for it
    digest_at: float = float("-inf")  # when its last digest came
    held: int = 0  # its batches waiting for our clock's bound to reach their stamps
    roster_differs_since: float | None = None
    roster_reported: bool = False
    cut: bool = False
    stats: PeerStatistics = field(default_factory=PeerStatistics)

    def take_tokens(self, cost: float, now: float, *, patch: bool = False) -> bool:
        """Charge `cost` if the bucket holds at least one token (it may go into debt); a state
        patch spends the state credit first."""
        self.tokens = min(RATE_BURST, self.tokens + (now - self.tokens_at) * RATE_PER_SECOND)
        self.tokens_at = now
        if patch and self.state_credit >= cost:
            self.state_credit -= cost
            return True
        if self.tokens < 1.0:
            return False
        self.tokens -= cost
        return True

    def take_chat(self, now: float) -> bool:
        self.chat_tokens = min(CHAT_BURST, self.chat_tokens + (now - self.chat_at) * CHAT_PER_SECOND)
        self.chat_at = now
        if self.chat_tokens < 1.0:
            return False
        self.chat_tokens -= 1.0
        return True

    def strike(self, weight: float, now: float) -> bool:
        """Count a refusal; True when this one reaches the cut (once per connection)."""
        leaked = max(0.0, self.flood_strikes - (now - self.flood_at) * FLOOD_LEAK)
        self.flood_strikes, self.flood_at = leaked + weight, now
        if self.flood_strikes >= CUT_AFTER_REJECTIONS and not self.cut:
            self.cut = True  # reported once per connection; `add_peer` starts afresh
            return True
        return False


def message_cost(size: int) -> float:
    """Tokens a message of `size` bytes costs before it is parsed."""
    return 1.0 + max(0, size - FREE_BYTES) / BYTES_PER_TOKEN


def full_state_cost(layout: Layout, members: int = 1, held: int = 0, held_bytes: int = 0) -> float:
    """Tokens a full state costs to receive at most: the largest this layout holds with MEMBERS
    writers (or HELD batches of HELD_BYTES, what our own state holds, if more), capped."""
    backers = sum(JOIN_BACKERS if rule in rules.JOINS else 1 for rule in layout.rules)
    batches = max(backers + 2 * len(layout.counters) * members, held)
    size = max(batches * STATE_BATCH_BYTES, held_bytes)
    parts = size // PATCH_BUDGET + 1
    cost = parts + size / BYTES_PER_TOKEN + batches / BATCHES_PER_TOKEN + layout.size / RUNS_PER_TOKEN
    return min(cost, MAX_STATE_CREDIT)


def parsed_cost(body: codec.Body) -> float:
    """Tokens for the work a parsed message asks for beyond its size: runs and signatures."""
    match body:
        case codec.WriteBatch(runs=runs):
            return len(runs) / RUNS_PER_TOKEN
        case codec.StatePatch(batches=batches):
            return len(batches) / BATCHES_PER_TOKEN
        case _:
            return 0.0


class Replica:
    """One room's replica of the shared bytes, and the rules for talking about them."""

    def __init__(
        self,
        *,
        signing_key: SigningKey,
        room: str,
        regions: Sequence[Region],
        session: int,
        state: SharedState | None = None,
    ) -> None:
        self.signing_key = signing_key
        self.key = bytes(signing_key.verify_key)
        self.room = room
        self.session = session
        self.signer = codec.Signer(signing_key, room, session)
        self.state = state if state is not None else SharedState(Layout(regions))
        self.clock = HybridClock(self.state.max_lamport)
        self.links: dict[bytes, _PeerSync] = {}
        self.authors = Authors(self.key, {b.author for b in self.state.batches.values()})
        """Keys whose signed batches are accepted, and batches held aside (see `authors`)."""
        self.rejections: Counter[str] = Counter()
        self.unencodable = 0  # messages of ours that could not be encoded (a bug: logged, dropped)
        self.roster = bytes(codec.ROSTER_HASH_SIZE)  # the hash of the roster we were given
        self.roster_keys: frozenset[bytes] = frozenset()
        self.vouched: set[bytes] = set(self.authors.stored) - {self.key}
        """Members known to have been in the room: authors of what was stored, and authors of
        batches another member passed on to us (not only their own say-so)."""
        self.full_states_from: set[bytes] = set()
        self._held: list[tuple[int, int, bytes, SignedBatch, bool]] = []  # a heap by Lamport value
        self._held_order = itertools.count()
        self._held_ids: set[bytes] = set()
        self._wall_offset = 0.0  # wall minus monotonic, as last seen (to time held batches)
        self._wall = 0.0  # the latest wall time given
        self._reclaimed_at = float("-inf")  # when words spent on authors were last taken back
        self.local_batches = 0
        self._outbox: list[tuple[bytes, bytes]] = []
        self._base: dict[int, Held] = {}
        """Per counter, our base once this session published there: the newest total of our own
        from an earlier session, as (session, lamport, total) (see the module docstring)."""
        self._made: dict[int, int] = {}  # per counter, what this session added to the base
        self._fold_due: set[int] = set()  # counters whose stored sessions we must fold (old stores)
        for (first, writer), (session, total) in self.state.legacy.items():
            held = self.state.held(first, writer)
            if writer == self.key and session < self.session:
                self._base[first] = (held[1], held[0], total) if held is not None else (session, 0, total)
                self._fold_due.add(first)

    # ---- peers --------------------------------------------------------------------------------

    def add_peer(self, peer: bytes, now: float) -> None:
        """Start syncing with an admitted peer: exchange digests, then full state if they differ."""
        if peer == self.key:
            raise ValueError("a replica cannot add itself as a peer")
        self.authors.admit(peer)
        self._queue_ready()
        link = self.links.get(peer)
        if link is None:
            link = self.links[peer] = _PeerSync(peer, added_at=now, tokens_at=now, chat_at=now)
        link.last_heard, link.silent_reported = now, False
        link.connected, link.paused, link.cut = True, False, False
        link.flood_strikes = 0.0
        link.dirty.clear()
        link.dirty_counters.clear()
        link.next_digest = now + DIGEST_INTERVAL
        self._credit_full_state(link, now)  # both sides send their full state on contact
        link.full_due = False
        self._send_full_state(link, now)

    def set_roster(self, keys: Iterable[bytes]) -> None:
        """The room's current members as our rendezvous lists them (heartbeats compare them)."""
        self.roster_keys = frozenset(keys) - {self.key}
        self.roster = codec.roster_hash({self.key, *self.roster_keys})

    def add_members(self, keys: Iterable[bytes]) -> None:
        """Keys the rendezvous names (roster, past members): their signed writes are accepted
        from now on (the most recently named `authors.NAMED_KEYS`)."""
        self.authors.name(keys)
        self._queue_ready()

    def remove_peer(self, peer: bytes) -> None:
        """Forget a peer's connection; its sequence numbers are kept in case it comes back."""
        self.authors.drop_sender(peer)  # (its next full state brings them again)
        link = self.links.get(peer)
        if link is not None:
            link.connected = False  # nothing is sent or accepted until `add_peer` again
            link.dirty.clear()
            link.dirty_counters.clear()

    def has_room_state(self, latest: bytes) -> bool:
        """Whether the full states merged so far, `latest`'s the last, are the room's: `latest`
        is known to have been in the room (`vouched`), or two members or every other member of
        the roster sent theirs. A member that joined a moment ago cannot make a joiner take its
        empty state for the room's before the older members' states arrive."""
        return (
            latest in self.vouched
            or len(self.full_states_from) >= 2
            or self.roster_keys <= self.full_states_from
        )

    def heard_within(self, peer: bytes, now: float, seconds: float) -> bool:
        """Whether a connected peer's last message came at most `seconds` before `now`."""
        link = self.links.get(peer)
        return link is not None and link.connected and now - link.last_heard <= seconds

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
        self._answer_full_state(link, now)

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
        runs.sort()
        floor = self._overwritten_stamp(runs, [first for first, _ in deltas])
        lamport = self.clock.stamp(wall if written_at is None else written_at, wall, floor=floor)
        totals = [
            (first, self._own_total(first, delta)) for first, delta in deltas if not self._replaced_in(first)
        ]
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

    def _overwritten_stamp(self, runs: list[Run], counters: list[int]) -> int:
        """The highest stamp a local write overwrites: its bytes' and its counter slots' (a
        write must beat these, and nothing else; see `clock` on the pinned bound)."""
        lamports, index = self.state.lamports, self.state.layout.index
        floor = max(
            (lamports[index(address + i)] for address, data in runs for i in range(len(data))), default=0
        )
        for first in counters:
            held = self.state.held(first, self.key)
            floor = max(floor, held[0] if held is not None else 0)
        return floor

    def _own_total(self, first: int, delta: int) -> int:
        """Our new total in the counter at FIRST after our game changed it by DELTA: our base
        plus what this session changed, modulo the counter's modulus (`merge`, F4)."""
        if first not in self._made:
            held = self.state.held(first, self.key)
            if held is not None and held[1] < self.session:
                self._base.setdefault(first, (held[1], held[0], held[2]))
            self._base.setdefault(first, (0, 0, 0))
            self._made[first] = 0
        self._fold_due.discard(first)
        self._made[first] += delta
        return rules.wrap(self._base[first][2] + self._made[first], self.state.layout.counters[first])

    def _replaced_in(self, first: int) -> bool:
        """A newer session of our own key holds our slot in the counter at FIRST (this process
        runs on beside its restart): it publishes our total, and folds ours (`_rebase`), so this
        one publishes none; its game's changes are answered with the room's value."""
        held = self.state.held(first, self.key)
        return held is not None and held[1] > self.session

    def _fold(self, firsts: Iterable[int], now: float, wall: float) -> list[Delta]:
        """Publish our total again in these counters: our base changed (a newer total of our own
        from an earlier session came in, or an old store's sessions are folded)."""
        firsts = sorted(firsts)
        self._fold_due.difference_update(firsts)
        firsts = [first for first in firsts if not self._replaced_in(first)]
        totals = tuple((first, self._own_total(first, 0)) for first in firsts)
        if not totals:
            return []
        lamport = self.clock.stamp(wall, wall)
        signed = codec.sign_batch(
            self.signing_key, room=self.room, session=self.session, lamport=lamport, runs=(), totals=totals
        )
        moved = self.state.apply_batch(signed)[1]
        self._publish(signed, now)
        return moved

    def _rebase(self, signed: SignedBatch) -> list[int]:
        """A total of our own from an *earlier* session that is newer than our base (the room
        held more than our disk when we started, or that session still runs): it becomes our
        base; returns the counters whose total this session must publish again (those it
        published already). A later session's total never is: that one folds ours, and taking
        it back would count each one's changes again and again."""
        if signed.author != self.key or signed.session >= self.session:
            return []
        moved = []
        for first, total in signed.totals:
            incoming = (signed.session, signed.lamport, total)
            if first in self._made and incoming > self._base[first]:
                self._base[first] = incoming
                moved.append(first)
        return moved

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
                link.stats.shared_bytes_sent += signed.size + len(signed.totals)

    def _corrections(self, changes: list[Run]) -> list[Run]:
        """Bytes the game wrote that the room's merge did not keep (a lost join, or a write older
        than one the room has: a stalled peer's backlog): the emulator must show the room's."""
        layout, values = self.state.layout, self.state.values
        runs: list[tuple[int, bytearray]] = []
        for address, data in changes:
            for offset, value in enumerate(data):
                i = layout.index(address + offset)
                if values[i] != value:
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
            self._ask_full_state(link, now)

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
            if link.full_due and not link.paused:
                deadlines.append(link.full_next_at)
            if not link.silent_reported:
                deadlines.append(link.last_heard + SILENT_AFTER)
        if self._fold_due:  # (now: an old store's sessions to fold, see `handle_timer`)
            deadlines.append(float("-inf"))
        if self._held:  # when our clock's bound reaches the lowest held stamp
            deadlines.append((self._held[0][0] - MAX_AHEAD_MS) / 1000 - self._wall_offset)
        return min(deadlines, default=None)

    def handle_timer(self, now: float, *, wall: float) -> list[Event]:
        self.authors.expire(now)
        events: list[Event] = self._release_held(now, wall)
        if self._fold_due:  # (an old store's sessions: once, at the first timer)
            moved = self._fold(self._fold_due, now, wall)
            events += [BytesChanged(self.key, (), tuple(moved))] if moved else []
            events.append(StateChanged())
        for link in self._open_links():
            # (the same sums as `get_timer`: a difference can round below it, and the loop spin)
            if now >= link.last_heartbeat + HEARTBEAT_INTERVAL:
                self._send_heartbeat(link, now, wall)
            if now >= link.next_digest:
                self._send_digest(link, now)
            if link.full_due:
                self._answer_full_state(link, now)
            if not link.silent_reported and now >= link.last_heard + SILENT_AFTER:
                link.silent_reported = True
                events.append(PeerSilent(link.peer))
        return events

    # ---- receiving ----------------------------------------------------------------------------

    def receive(self, peer: bytes, data: bytes, now: float, *, wall: float) -> list[Event]:
        self._wall = wall
        released = self._release_held(now, wall) if self._held else []
        return released + self._receive(peer, data, now, wall)

    def _receive(self, peer: bytes, data: bytes, now: float, wall: float) -> list[Event]:
        link = self.links.get(peer)
        if link is None or not link.connected:
            return [self._reject(link, peer, "not_admitted")]
        cost = message_cost(len(data))
        if not link.take_tokens(cost, now, patch=data[1:2] == bytes([codec.Kind.STATE_PATCH])):
            return self._rate_limited(link, cost, now)
        try:
            message = codec.decode(data, room=self.room, keys=(peer,), max_runs=self.state.layout.size)
        except codec.DecodeError as exc:
            return self._refuse(link, now, exc.reason, str(exc))
        link.tokens -= parsed_cost(message.body)
        link.last_heard, link.silent_reported = now, False
        link.stats.messages_received += 1
        link.stats.bytes_received += len(data)
        verdict = self._check_sequence(link, message, now)
        if verdict is not None:
            return verdict
        return self._dispatch(link, message.body, now, wall)

    def _rate_limited(self, link: _PeerSync, cost: float, now: float) -> list[Event]:
        events: list[Event] = [self._reject(link, link.peer, "rate_limited")]
        if link.strike(cost, now):
            events.append(CutPeer(link.peer, "flooding"))
        return events

    def _refuse(self, link: _PeerSync, now: float, reason: str, detail: str = "") -> list[Event]:
        """Refuse one message (or one batch of a patch) from an admitted peer; it counts as a
        strike, so a peer that keeps sending what this replica refuses is cut."""
        events: list[Event] = [self._reject(link, link.peer, reason, detail)]
        if link.strike(1.0, now):
            events.append(CutPeer(link.peer, f"refused too often ({reason})"))
        return events

    def _check_sequence(self, link: _PeerSync, message: codec.Decoded, now: float) -> list[Event] | None:
        """None when the message is new and in order enough to process; else the events."""
        if message.seq == 0:
            return self._refuse(link, now, "handshake_after_admission")
        if message.session != link.session:
            link.session, link.highest_seq = message.session, 0  # the peer restarted
            link.recent.clear()
        seen = link.recent.get(message.seq)
        if seen is not None:
            if seen == message.signature:
                link.stats.rejections["duplicate"] += 1
                return []
            return self._refuse(link, now, "forgery", f"two messages with seq {message.seq}")
        if message.seq <= link.highest_seq - SEQ_WINDOW:
            return self._refuse(link, now, "stale", f"seq {message.seq}")
        if link.highest_seq and message.seq > link.highest_seq + 1:
            self._ask_full_state(link, now)  # messages were lost on the way
        link.highest_seq = max(link.highest_seq, message.seq)
        link.recent[message.seq] = message.signature
        while len(link.recent) > SEQ_WINDOW:
            link.recent.popitem(last=False)
        return None

    def _dispatch(self, link: _PeerSync, body: codec.Body, now: float, wall: float) -> list[Event]:
        match body:
            case codec.WriteBatch():
                return self._receive_batch(link, body, now, wall)
            case codec.StatePatch():
                return self._receive_patch(link, body, now, wall)
            case codec.Digest():
                return self._receive_digest(link, body, now)
            case codec.ResyncRequest():
                link.full_due = True
                self._answer_full_state(link, now)
                return []
            case codec.Heartbeat():
                self._receive_heartbeat(link, body, now, wall)
                return self._compare_rosters(link, body.roster, now)
            case codec.Chat(text):
                if not link.take_chat(now):
                    return self._refuse(link, now, "chat_limited")
                return [ChatReceived(link.peer, text)]
            case codec.Bye(reason):
                self.remove_peer(link.peer)
                return [PeerLeft(link.peer, reason)]
            case _:
                return self._refuse(link, now, "handshake_after_admission")

    def _receive_batch(
        self, link: _PeerSync, batch: codec.WriteBatch, now: float, wall: float
    ) -> list[Event]:
        problem = self._check_batch(batch.runs, batch.totals)
        if problem:
            return self._refuse(link, now, *problem)
        try:
            signed = codec.batch_of(link.peer, link.session or 0, batch, room=self.room)
        except codec.DecodeError as exc:
            return self._refuse(link, now, exc.reason, str(exc))
        if len(signed.raw) > codec.MAX_BATCH_SIZE:  # (no patch could pass it on: it would poison us)
            return self._refuse(link, now, "batch_too_large", f"{len(signed.raw)} bytes")
        link.stats.shared_bytes_received += signed.size + len(batch.totals)
        changes: list[Run] = []
        deltas: list[Delta] = []
        events = self._take(link, signed, now, wall, changes, deltas)
        return events + self._merged(link, changes, deltas)

    def _take(
        self,
        link: _PeerSync,
        signed: SignedBatch,
        now: float,
        wall: float,
        changes: list[Run],
        deltas: list[Delta],
    ) -> list[Event]:
        """Apply a checked signed batch now, hold it until our clock's bound reaches its stamp,
        or refuse it (see `clock`); a stamp far above its sender's own clock counts against it."""
        events: list[Event] = []
        if signed.author == link.peer and self._ahead_of_sender(link, signed.lamport, wall):
            events += self._refuse(link, now, "stamp_ahead_of_sender", f"Lamport {signed.lamport}")
        match hold_or_refuse(signed.lamport, wall, self._hold_allowance(link, signed.author)):
            case None:
                self._apply(link.peer, signed, now, wall, changes, deltas)
            case "hold" if signed.id in self._held_ids:
                pass  # (a catch-up or full state brought it again)
            case "hold" if link.held < HELD_PER_PEER:
                self._hold(link.peer, signed, counted=True)
            case "hold":  # an honest peer's clock may be that far ahead: not its fault (F7)
                events.append(self._reject(link, link.peer, "held_full", f"Lamport {signed.lamport}"))
            case _:
                detail = f"Lamport {signed.lamport} is beyond this peer's clock bound"
                events += self._refuse(link, now, "lamport_ahead", detail)
        return events

    def _hold_allowance(self, link: _PeerSync, author: bytes) -> int:
        """How far past our bound a batch by AUTHOR from LINK's peer is held, not refused: what
        the sender's or the author's clock, as their heartbeats show it, explains (see `clock`)."""
        skews = [link.stats.skew]
        author_link = self.links.get(author)
        if author_link is not None:
            skews.append(author_link.stats.skew)
        return hold_allowance(max((skew for skew in skews if skew is not None), default=None))

    def _hold(self, peer: bytes, signed: SignedBatch, *, counted: bool) -> None:
        """Keep a batch until our clock's bound reaches its stamp; COUNTED against its sender's
        `HELD_PER_PEER` (a batch within the bound already waits only for the next timer)."""
        link = self.links.get(peer)
        if link is not None and counted:
            link.held += 1
        self._held_ids.add(signed.id)
        entry = (signed.lamport, next(self._held_order), peer, signed, counted)
        heapq.heappush(self._held, entry)

    def _ahead_of_sender(self, link: _PeerSync, lamport: int, wall: float) -> bool:
        """The sender stamped its own write past its own clock's bound (its clock as its
        heartbeats show it): an honest replica never merges a value past its bound (it holds it,
        see `clock`), so it never stamps one either (issue 18, F1)."""
        skew = link.stats.skew
        if skew is None:
            return False
        return lamport > wall_ms(wall + skew) + MAX_AHEAD_MS + SENDER_SLACK_MS

    def _apply(
        self,
        peer: bytes,
        signed: SignedBatch,
        now: float,
        wall: float,
        changes: list[Run],
        deltas: list[Delta],
    ) -> None:
        self.clock.observe(signed.lamport, wall)
        if signed.author != peer:
            self.vouched.add(signed.author)
        rebased = self._rebase(signed)
        changed, moved = self.state.apply_batch(signed)
        changes += changed
        deltas += moved + self._fold(rebased, now, wall)

    def _queue_ready(self) -> None:
        """Batches held aside whose authors are accepted now wait with the held ones, to be
        merged at the next timer or message (or when our clock's bound reaches them). Their
        stamps were checked when they were set aside and are checked again now, under the same
        limits as any held batch: a stamp far ahead is not let in by waiting aside."""
        for peer, signed in self.authors.take_ready():
            if signed.id in self._held_ids:
                continue
            link = self.links.get(peer)
            allowance = self._hold_allowance(link, signed.author) if link else hold_allowance(None)
            match hold_or_refuse(signed.lamport, self._wall, allowance):
                case None:
                    self._hold(peer, signed, counted=False)
                case "hold" if link is not None and link.held < HELD_PER_PEER:
                    self._hold(peer, signed, counted=True)
                case "hold":
                    self._reject(link, peer, "held_full", f"Lamport {signed.lamport}")
                case _:
                    self._reject(link, peer, "lamport_ahead", f"Lamport {signed.lamport}, held aside")

    def _release_held(self, now: float, wall: float) -> list[Event]:
        """Apply the held batches whose stamps our clock's bound has reached."""
        self._wall_offset, self._wall = wall - now, wall
        released: dict[bytes, tuple[list[Run], list[Delta]]] = {}
        while self._held and not is_too_far_ahead(self._held[0][0], wall):
            _, _, peer, signed, counted = heapq.heappop(self._held)
            self._held_ids.discard(signed.id)
            link = self.links.get(peer)
            if link is not None and counted:
                link.held -= 1
            changes, deltas = released.setdefault(peer, ([], []))
            self._apply(peer, signed, now, wall, changes, deltas)
        events: list[Event] = []
        for peer, (changes, deltas) in released.items():
            if changes or deltas:
                events.append(BytesChanged(peer, tuple(changes), tuple(deltas)))
        if released and self.state.has_dirty:
            events.append(StateChanged())
        return events

    def _check_batch(self, runs: Iterable[Run], totals: Iterable[tuple[int, int]]) -> tuple[str, str] | None:
        for address, data in runs:
            if not self.state.layout.check_bytes(address, len(data)):
                return "outside_regions", f"{len(data)} bytes at {address:#06x}"
        counters = self.state.layout.counters
        for first, total in totals:
            if first not in counters:
                return "outside_regions", f"no counter at {first:#06x}"
            if not rules.in_range(total, counters[first]):  # (issue 30, F4: see `merge`)
                return "total_out_of_range", f"a total of {total} at {first:#06x}"
        return None

    def _merged(self, link: _PeerSync, changes: list[Run], deltas: list[Delta]) -> list[Event]:
        events: list[Event] = []
        if changes or deltas:
            events.append(BytesChanged(link.peer, tuple(changes), tuple(deltas)))
        if self.state.has_dirty:
            events.append(StateChanged())
        return events

    def _receive_patch(
        self, link: _PeerSync, patch: codec.StatePatch, now: float, wall: float
    ) -> list[Event]:
        """Merge every signed batch of the patch that verifies and keeps the rules; each one that
        does not is refused alone and counted against the sender."""
        events: list[Event] = []
        changes: list[Run] = []
        deltas: list[Delta] = []
        for raw in patch.batches:
            try:
                signed = codec.open_batch(raw, room=self.room, authors=None, max_runs=self.state.layout.size)
            except codec.DecodeError as exc:
                events += self._refuse(link, now, exc.reason, str(exc))
                continue
            problem = self._check_batch(signed.runs, signed.totals)
            if problem:
                events += self._refuse(link, now, *problem)
                continue
            if hold_or_refuse(signed.lamport, wall, self._hold_allowance(link, signed.author)) == "refuse":
                # (checked before its author is: waiting aside must not let a stamp in later)
                events += self._refuse(link, now, "lamport_ahead", f"Lamport {signed.lamport}")
                continue
            if signed.author not in self.authors and not self._vouch(link, signed.author, now):
                if not self.authors.set_aside(link.peer, signed, now):  # (not a strike: see `authors`)
                    events.append(self._reject(link, link.peer, "unknown_author", signed.author.hex()[:8]))
                continue
            events += self._take(link, signed, now, wall, changes, deltas)
        self._queue_ready()
        events += self._merged(link, changes, deltas)
        if patch.full and patch.part == patch.parts - 1:
            link.awaiting = False
            self.full_states_from.add(link.peer)
            events.append(FullStateReceived(link.peer, self.has_room_state(link.peer)))
        return events

    def _vouch(self, link: _PeerSync, author: bytes, now: float) -> bool:
        """Take the peer's word for AUTHOR if words are left, after taking back the words spent
        on authors whose batches back nothing any more (at most once per `RECLAIM_INTERVAL`:
        it walks the state, and a member could send a made-up author per message)."""
        if self.authors.vouch(link.peer, author):
            return True
        if now - self._reclaimed_at < RECLAIM_INTERVAL:
            return False
        self._reclaimed_at = now
        if not self.authors.reclaim({batch.author for batch in self.state.batches.values()}):
            return False
        return self.authors.vouch(link.peer, author)

    def _receive_digest(self, link: _PeerSync, digest: codec.Digest, now: float) -> list[Event]:
        """A digest asks for state (issue 30, F1): one per half DIGEST_INTERVAL (an honest peer
        sends one per interval; each costs us a `state.digest()`), answered by what is newer than
        its stamp when that fits one patch and the peer may have state now, else by a full state
        with the full state's limits (interval, pause, bytes charged)."""
        if now - link.digest_at < DIGEST_INTERVAL / 2:
            # Dropped, not a strike: the network bunches an honest peer's digests (a stalled link
            # delivers several at once), and a dropped digest costs us nothing.
            return [self._reject(link, link.peer, "digest_too_often")]
        link.digest_at = now
        if self.authors.aside_from(link.peer):
            return []  # (we hold its batches aside, so we differ; its state would bring them again)
        if digest.digest == self.state.digest():
            return []
        if digest.max_lamport != self.state.max_lamport:
            newer = self.state.signed_batches(newer_than=digest.max_lamport)
            if not newer:
                return []  # it is ahead of us: its catch-up comes our way
            size = sum(len(batch.raw) for batch in newer)
            if size <= PATCH_BUDGET and not link.paused and now >= link.full_next_at:
                self._send_batches(link, newer, full=False, now=now)
                link.full_next_at = now + size / FULL_STATE_BYTES_PER_SECOND  # (charged like one)
                return []
        link.stats.repairs += 1
        link.full_due = True
        self._answer_full_state(link, now)
        return [Repaired(link.peer)]

    def _receive_heartbeat(self, link: _PeerSync, beat: codec.Heartbeat, now: float, wall: float) -> None:
        link.echo = (beat.sent_ms, now)
        link.stats.skew = beat.sent_ms / 1000 - wall
        # The echo names one of our heartbeats by its wall `sent_ms`; the round trip is timed on
        # the monotonic clock from when we sent that one (a wall step in between changes nothing).
        sent_at = next((at for sent_ms, at in link.beats if sent_ms == beat.echo_ms), None)
        if beat.echo_ms and sent_at is not None:
            rtt = now - sent_at - beat.held_ms / 1000
            if rtt >= 0:
                link.stats.rtt = rtt

    def _compare_rosters(self, link: _PeerSync, theirs: bytes, now: float) -> list[Event]:
        unknown = bytes(codec.ROSTER_HASH_SIZE)
        if theirs == self.roster or unknown in (theirs, self.roster):
            link.roster_differs_since = None
            if link.roster_reported:
                link.roster_reported = False
                return [RosterDiffers(link.peer, agree=True)]
            return []
        if link.roster_differs_since is None:
            link.roster_differs_since = now
        if now - link.roster_differs_since >= ROSTER_GRACE and not link.roster_reported:
            link.roster_reported = True
            return [RosterDiffers(link.peer)]
        return []

    # ---- sending ------------------------------------------------------------------------------

    def _ask_full_state(self, link: _PeerSync, now: float) -> None:
        """Ask for the peer's full state, at most once per `REQUEST_INTERVAL` (later asks are
        merged into the one in flight: its answer holds everything they would have brought)."""
        if link.awaiting and now - link.asked_at < REQUEST_INTERVAL:
            return
        link.stats.resyncs_requested += 1
        self._credit_full_state(link, now)
        self._send(link, codec.ResyncRequest(), now)

    def _credit_full_state(self, link: _PeerSync, now: float) -> None:
        link.asked_at, link.awaiting = now, True
        if now - link.credited_at < REQUEST_INTERVAL:
            return  # one credit per interval, however often the state is asked for
        link.credited_at = now
        held = self.state.batches.values()
        link.state_credit = full_state_cost(
            self.state.layout, len(self.authors), len(held), sum(len(b.raw) for b in held)
        )

    def _open_links(self) -> list[_PeerSync]:
        return [link for link in self.links.values() if link.connected]

    def _send(self, link: _PeerSync, body: codec.Body, now: float) -> None:
        try:
            message = codec.encode(
                body, signing_key=self.signing_key, room=self.room, session=self.session, seq=link.next_seq
            )
        except ValueError as exc:  # (a bug of ours; never let it end a link or the mesh)
            self.unencodable += 1
            log.error("a %s for %s could not be encoded: %s", type(body).__name__, link.peer.hex()[:8], exc)
            return
        link.next_seq += 1
        link.stats.messages_sent += 1
        link.stats.bytes_sent += len(message)
        self._outbox.append((link.peer, message))

    def _send_heartbeat(self, link: _PeerSync, now: float, wall: float) -> None:
        echo_ms = held_ms = 0
        if link.echo is not None:
            echo_ms, held_ms = link.echo[0], int((now - link.echo[1]) * 1000)
        link.last_heartbeat = now
        sent_ms = wall_ms(wall)
        link.beats.append((sent_ms, now))
        while len(link.beats) > BEATS_KEPT:
            link.beats.popleft()
        self._send(link, codec.Heartbeat(sent_ms, echo_ms, max(0, held_ms), self.roster), now)

    def _send_digest(self, link: _PeerSync, now: float) -> None:
        link.next_digest = now + DIGEST_INTERVAL
        if self.authors.aside_from(link.peer):
            return  # (it would answer with the batches we hold aside; see `authors`)
        self._send(link, codec.Digest(self.state.digest(), self.state.max_lamport), now)

    def _answer_full_state(self, link: _PeerSync, now: float) -> None:
        """Send the full state a peer is waiting for, if its link allows it now (see
        `FULL_STATE_INTERVAL`); otherwise it stays due and a timer or `resume_peer` sends it."""
        if not link.full_due or link.paused or now < link.full_next_at:
            return
        link.full_due = False
        sent = link.stats.bytes_sent
        self._send_full_state(link, now)
        charged = (link.stats.bytes_sent - sent) / FULL_STATE_BYTES_PER_SECOND
        link.full_next_at = now + max(FULL_STATE_INTERVAL, charged)

    def _send_full_state(self, link: _PeerSync, now: float) -> None:
        """Batches by authors we know first-hand go first: a receiver takes a few authors on our
        word (`authors.VOUCHES_PER_MEMBER`), and those should be the players we saw."""
        batches = sorted(self.state.signed_batches(), key=lambda b: not self.authors.first_hand(b.author))
        self._send_batches(link, batches, full=True, now=now)

    def _send_batches(self, link: _PeerSync, batches: list[SignedBatch], *, full: bool, now: float) -> None:
        parts = split_batches([b.raw for b in batches], PATCH_BUDGET)
        for number, part in enumerate(parts):
            self._send(link, codec.StatePatch(full, number, len(parts), tuple(part)), now)

    def _reject(self, link: _PeerSync | None, peer: bytes, reason: str, detail: str = "") -> Rejected:
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
            cost = RUN_OVERHEAD + len(chunk)  # (a run's encoding: many tiny runs cost more than their bytes)
            if size + cost > BATCH_BUDGET and group:
                yield tuple(group), tuple(totals) if first else ()
                group, size, first = [], 0, False
            group.append((address + offset, chunk))
            size += cost
    if group or (first and totals):
        yield tuple(group), tuple(totals) if first else ()
