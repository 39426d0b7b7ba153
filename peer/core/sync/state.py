"""The room's shared state: per-byte values with stamps, merged by each region's rule, and counters.

Every shared byte carries (value, lamport, writer). Under `lww` (the default) a write wins when its
(lamport, writer) pair is greater than the byte's current one, writers being 32-byte keys compared
as bytes. Should one writer ever use one stamp for two values (only a broken or hostile peer can),
the larger value wins, so even then every replica picks the same byte. The rule is a join on a total
order, so any replicas that received the same writes in any order, any number of times, hold the
same bytes: that is the whole convergence argument, and the property tests check it. The other
per-byte rules (`max`, `min`, `bit-or`, `bit-and`) join values and stamps separately; `add` regions
hold counters made of per-writer contributions. `peer.core.sync.merge` explains each rule and why it
converges; this module applies them.

This module owns the state and its durable serialisation. It knows nothing of messages, peers or
time; addresses handed to it must already be inside the regions (`Layout.check_run` says so), and
bytes written as bytes must not be in an `add` region (`Layout.check_bytes`): a counter changes
only through contributions.

Signed data keeps its signature wherever it travels: besides the merged bytes, the state keeps the
set of `SignedBatch`es (each one author's write exactly as that author signed it) that still hold a
current byte or counter slot. `apply_batch` merges one and records, per byte and per slot, which
batches back the current value (under `lww` the one batch whose stamp is current; under a join the
few batches that are needed to give its value and stamp, `_needed`); a batch is dropped once it
backs nothing. What is kept is therefore bounded by the layout and the writers, whatever one member
sends (issue 30, F3): per `lww` byte one batch; per join byte the newest batch (the byte's stamp)
and those that give a bit (`bit-or`, `bit-and`: at most 8 more) or the extreme (`max`, `min`: one
more) that the others do not; per counter one slot per writer (see `merge`). A losing value written
under newer stamps once piled up one backer per write. Full state, repair and
the disk carry these batches, never bytes re-stamped by whoever sends them, so a receiver verifies
every byte against its author's key (`codec.open_batch`). Bytes merged with `merge`/`apply` (tests,
old stores) are unbacked: they count for the merge but are never sent on.

What must reach the disk is what the merge decided, value *and* stamp: a write of an unchanged value
under a newer stamp changes no byte but must be saved, or after a restart the disk would hold the older
stamp (or none) and the replica would disagree with the room. So the state keeps the set of addresses
whose stamp moved (`dirty`) and the contributions that moved (`dirty_contributions`), and the
persistence drains them (`take_dirty`, `take_dirty_contributions`).
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from games.definition import LWW, Merge, MergeRule, Region, check_no_overlap
from peer.core.sync import merge as rules

Run = tuple[int, bytes]  # (first address, bytes)


def byte_values(runs: Iterable[Run]) -> dict[int, int]:
    """Runs as address -> byte (a later run wins where two overlap)."""
    return {address + i: value for address, data in runs for i, value in enumerate(data)}


Delta = tuple[int, int]  # (a counter's first address, how much its shown value changed)
Held = tuple[int, int, int]  # a writer's slot in one counter: (lamport, session, total)
Backer = tuple[int, bytes, bytes, int]  # (lamport, writer, batch id, value) of a batch backing a byte
NO_WRITER = b""  # the writer of bytes nobody has written yet; loses to every real write
MAX_TOTAL = 2**63 - 1  # a contribution's total is a signed 64-bit number on the wire and on disk
_LWW, _ADD = MergeRule.LWW, MergeRule.ADD


@dataclass(frozen=True, slots=True)
class Entry:
    """A run of consecutive bytes that share one stamp (the unit of snapshots and patches)."""

    address: int
    lamport: int
    writer: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class Contribution:
    """One slot's net contribution to the counter at `address`, as of `lamport`."""

    address: int
    lamport: int
    writer: bytes
    session: int
    total: int

    def __post_init__(self) -> None:
        if not -MAX_TOTAL <= self.total <= MAX_TOTAL:
            raise ValueError(f"a contribution of {self.total} is out of range")
        if not 0 <= self.session < 2**64:
            raise ValueError("a session is an unsigned 64-bit number")


@dataclass(frozen=True, slots=True)
class SignedBatch:
    """One author's write as it signed it: byte runs and its new counter totals, all under one
    Lamport stamp, the counter slot being (author, session). `raw` is the signed encoding that
    travels and is stored (built and checked by `peer.core.sync.codec`); its last 64 bytes are the
    Ed25519 signature, which identifies the batch."""

    author: bytes
    session: int
    lamport: int
    runs: tuple[Run, ...]
    totals: tuple[tuple[int, int], ...]
    raw: bytes

    @property
    def id(self) -> bytes:
        return self.raw[-64:]

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.runs)


class Layout:
    """Maps CPU addresses to positions in the flat state arrays, with each byte's merge rule."""

    def __init__(self, regions: Sequence[Region]) -> None:
        check_no_overlap(regions)
        self.regions = tuple(sorted(regions, key=lambda region: region.start))
        self._index = array("l", [-1]) * 0x10000
        self.addresses: list[int] = []
        self.rules: list[MergeRule] = []
        self.counters: dict[int, Merge] = {}
        """The first address of every counter (`add` unit) and its rule."""
        self._counter_of: dict[int, int] = {}
        for region in self.regions:
            for address in range(region.start, region.end + 1):
                self._index[address] = len(self.addresses)
                self.addresses.append(address)
                self.rules.append(region.merge.rule)
            if region.merge.rule is MergeRule.ADD:
                for first in range(region.start, region.end + 1, region.merge.width):
                    self.counters[first] = region.merge
                    for address in range(first, first + region.merge.width):
                        self._counter_of[address] = first
        self.size = len(self.addresses)
        description = ",".join(f"{r.start:04x}-{r.end:04x}" for r in self.regions)
        if any(region.merge != LWW for region in self.regions):  # (an all-LWW layout keeps its old name)
            description += "|" + ",".join(str(r.merge) for r in self.regions)
        self.fingerprint = hashlib.blake2b(description.encode(), digest_size=8).digest()

    def index(self, address: int) -> int:
        """Position of a shared address, or -1."""
        return self._index[address] if 0 <= address <= 0xFFFF else -1

    def check_run(self, address: int, length: int) -> bool:
        """True when every byte of the run is shared."""
        if length <= 0 or address < 0 or address + length > 0x10000:
            return False
        index = self._index
        return all(index[a] >= 0 for a in range(address, address + length))

    def check_bytes(self, address: int, length: int) -> bool:
        """True when every byte of the run is shared and none belongs to a counter."""
        return self.check_run(address, length) and not any(
            a in self._counter_of for a in range(address, address + length)
        )

    def counter_of(self, address: int) -> int | None:
        """The first address of the counter this byte belongs to (None: not in an `add` region)."""
        return self._counter_of.get(address)


class SharedState:
    """The replica's view of every shared byte, with the stamp that put it there."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.values = bytearray(layout.size)
        self.lamports = [0] * layout.size
        self.writers = [NO_WRITER] * layout.size
        self.slots: dict[int, dict[bytes, Held]] = {first: {} for first in layout.counters}
        """Per counter, every writer's slot: (lamport, session, total) of its newest total, the
        newest session first (`newer`); the counter is the sum of these."""
        self.carried: dict[int, dict[bytes, Held]] = {first: {} for first in layout.counters}
        """Per counter and writer, the newest total of the writer's newest session before its
        slot's: not summed, but kept and passed on, so that a restarted peer whose disk lagged can
        take it as its base however messages were lost (see `merge`)."""
        self.dirty: set[int] = set()
        """Addresses whose value or stamp changed since the last `take_dirty` (counters excluded)."""
        self.dirty_contributions: set[tuple[int, bytes]] = set()
        """(counter, writer) whose contribution changed since `take_dirty_contributions`."""
        self.batches: dict[bytes, SignedBatch] = {}
        """The signed batches that still back a current byte or slot, by id (signature)."""
        self._backers: list[tuple[Backer, ...]] = [()] * layout.size
        self._slot_backer: dict[tuple[int, bytes], bytes] = {}
        self._carried_backer: dict[tuple[int, bytes], bytes] = {}
        self._holds: dict[bytes, int] = {}
        self.added_batches: set[bytes] = set()
        """Ids of batches kept since the last `take_batch_changes` (to store)."""
        self.dropped_batches: set[bytes] = set()
        """Ids of stored batches that back nothing any more (to delete)."""
        self._current: bytes | None = None  # the batch being applied, while `apply_batch` runs
        self.legacy: dict[tuple[int, bytes], tuple[int, int]] = {}
        """(counter, writer) -> (newest session, sum of its sessions' totals) of a writer with several
        sessions in a state stored before protocol 6, where each session was a slot of its own
        (see `load_batches`): the counter counts that sum for the writer until a total of a newer
        session of the writer's comes in (the writer folds it when it next plays)."""

    def take_dirty(self) -> set[int]:
        """The addresses to save now (and forget them)."""
        dirty, self.dirty = self.dirty, set()
        return dirty

    def take_dirty_contributions(self) -> list[Contribution]:
        """The contributions to save now (and forget them)."""
        keys, self.dirty_contributions = self.dirty_contributions, set()
        return [self._contribution(first, writer) for first, writer in sorted(keys)]

    def put_back(
        self,
        addresses: Iterable[int],
        contributions: Iterable[Contribution],
        batches: Iterable[SignedBatch],
        dropped: Iterable[bytes],
    ) -> None:
        """What a save took (`take_dirty`, `take_dirty_contributions`, `take_batch_changes`) and
        could not write: to be saved next time, with whatever changed since."""
        self.dirty.update(addresses)
        self.dirty_contributions.update((c.address, c.writer) for c in contributions)
        self.added_batches.update(batch.id for batch in batches)
        self.dropped_batches.update(dropped)

    @property
    def has_dirty(self) -> bool:
        return bool(self.dirty or self.dirty_contributions or self.added_batches or self.dropped_batches)

    @property
    def max_lamport(self) -> int:
        return max(self.lamports, default=0)

    def read(self, address: int, length: int = 1) -> bytes:
        start = self.layout.index(address)
        return bytes(self.values[i] for i in range(start, start + length))

    def apply(self, address: int, data: bytes, lamport: int, writer: bytes) -> list[Run]:
        """Merge one run written under one stamp; returns the runs whose *values* changed."""
        if writer == NO_WRITER:
            return []  # bytes nobody wrote (a snapshot's placeholders) are the identity of every rule
        index, rules_of = self.layout.index, self.layout.rules
        lww, add = _LWW, _ADD  # (locals: an Enum member looked up per byte costs more than the merge)
        values, lamports, writers, dirty = self.values, self.lamports, self.writers, self.dirty
        changed: list[Run] = []
        run_start, run_bytes = -1, bytearray()
        for offset, value in enumerate(data):
            i = index(address + offset)
            rule = rules_of[i]
            if rule is lww:
                if (lamport, writer, value) <= (lamports[i], writers[i], values[i]):
                    continue
                merged = value
                lamports[i], writers[i] = lamport, writer
                self._back(i, rule, value, lamport, writer)
            elif rule is add:
                raise ValueError(f"{address + offset:#06x} is a counter: it changes by contributions")
            else:  # a join: values and stamps each take the larger
                merged = value if writers[i] == NO_WRITER else rules.join(rule, values[i], value)
                if merged == values[i] and (lamport, writer) <= (lamports[i], writers[i]):
                    continue
                lamports[i], writers[i] = max((lamport, writer), (lamports[i], writers[i]))
                self._back(i, rule, value, lamport, writer)
            dirty.add(address + offset)
            if values[i] != merged:
                values[i] = merged
                if run_start + len(run_bytes) != address + offset:
                    if run_bytes:
                        changed.append((run_start, bytes(run_bytes)))
                    run_start, run_bytes = address + offset, bytearray()
                run_bytes.append(merged)
        if run_bytes:
            changed.append((run_start, bytes(run_bytes)))
        return changed

    def apply_batch(self, batch: SignedBatch) -> tuple[list[Run], list[Delta]]:
        """Merge one verified signed batch (its runs and its author's totals) and keep it while
        it backs anything; returns the runs whose values changed and the counters' moves.
        Applying a batch already kept changes nothing."""
        if batch.id in self.batches:
            return [], []
        for first, total in batch.totals:
            merge = self.layout.counters.get(first)
            if merge is None or not rules.in_range(total, merge):
                raise ValueError(f"a total of {total} at {first:#06x} is not one this counter takes")
        self.batches[batch.id] = batch
        self._holds[batch.id] = 0
        self._current = batch.id
        try:
            changed = self.apply_runs(batch.runs, batch.lamport, batch.author)
            moved = self.merge_contributions(
                Contribution(first, batch.lamport, batch.author, batch.session, total)
                for first, total in batch.totals
            )
        finally:
            self._current = None
        if self._holds[batch.id] == 0:
            del self.batches[batch.id], self._holds[batch.id]
        else:
            self.added_batches.add(batch.id)
        return changed, moved

    def take_batch_changes(self) -> tuple[list[SignedBatch], set[bytes]]:
        """The batches to store and the ids to delete since the last call (and forget them)."""
        added = [self.batches[i] for i in self.added_batches if i in self.batches]
        dropped, self.added_batches, self.dropped_batches = self.dropped_batches, set(), set()
        return added, dropped

    def batches_backing(self, addresses: Iterable[int], counters: Iterable[int] = ()) -> list[SignedBatch]:
        """The signed batches that back the current value of any of these bytes or counters."""
        index, ids = self.layout.index, set[bytes]()
        for address in addresses:
            ids.update(backer[2] for backer in self._backers[index(address)])
        wanted = set(counters)
        ids.update(b for (first, _), b in self._slot_backer.items() if first in wanted)
        ids.update(b for (first, _), b in self._carried_backer.items() if first in wanted)
        return [self.batches[i] for i in self._order(ids)]

    def signed_batches(self, newer_than: int = -1) -> list[SignedBatch]:
        """Every kept batch (or those stamped after NEWER_THAN), oldest stamp first."""
        return [self.batches[i] for i in self._order(self.batches) if self.batches[i].lamport > newer_than]

    def _order(self, ids: Iterable[bytes]) -> list[bytes]:
        return sorted(ids, key=lambda i: (self.batches[i].lamport, i))

    def _back(self, i: int, rule: MergeRule, value: int, lamport: int, writer: bytes) -> None:
        """Byte I took VALUE under (LAMPORT, WRITER) from the batch being applied (if any): record
        which batches now back it (`_needed`), and release those that no longer do."""
        old, current = self._backers[i], self._current
        if rule is _LWW:  # (the common case, kept cheap: one backer replaces at most one)
            self._backers[i] = ((lamport, writer, current, value),) if current is not None else ()
            if current is not None:
                self._holds[current] += 1  # (a batch writes a byte once: its runs do not overlap)
            for lost in old:
                self._release(lost[2])
            return
        if current is None:  # (an unbacked write: tests, old stores)
            return
        new = _needed(rule, (*old, (lamport, writer, current, value)))
        self._backers[i] = new
        kept, before = {b[2] for b in new}, {b[2] for b in old}
        if current in kept and current not in before:
            self._holds[current] += 1
        for gone in before - kept:
            self._release(gone)

    def _release(self, backer: bytes) -> None:
        holds = self._holds.get(backer)
        if holds is None:
            return
        if holds > 1:
            self._holds[backer] = holds - 1
            return
        del self._holds[backer], self.batches[backer]
        if backer in self.added_batches:
            self.added_batches.discard(backer)
        else:
            self.dropped_batches.add(backer)

    def apply_runs(self, runs: Iterable[Run], lamport: int, writer: bytes) -> list[Run]:
        changed: list[Run] = []
        for address, data in runs:
            changed.extend(self.apply(address, data, lamport, writer))
        return changed

    def contribute(self, contribution: Contribution) -> int:
        """Merge one writer's total; returns how much the counter's shown value changed.

        The slot keeps the writer's newest total (`newer`); a total of an earlier session than the
        slot's is carried (`carried`), and so is the slot's total when a newer session replaces it."""
        first, writer = contribution.address, contribution.writer
        slots = self.slots[first]  # (KeyError: not a counter; callers check first)
        incoming = (contribution.lamport, contribution.session, contribution.total)
        held = slots.get(writer)
        key = (first, writer)
        if held is not None and not newer(incoming, held):
            if incoming[1] < held[1]:
                self._carry(first, writer, incoming)
            return 0
        slots[writer] = incoming
        self.dirty_contributions.add(key)
        old = self._slot_backer.pop(key, None)
        if self._current is not None:
            self._slot_backer[key] = self._current
            self._holds[self._current] += 1
        if held is not None and held[1] < incoming[1]:
            self._carry(first, writer, held, old)  # (its backer moves with it)
        elif old is not None:
            self._release(old)
        legacy = self.legacy.get(key)
        if legacy is not None and incoming[1] > legacy[0]:
            del self.legacy[key]  # (the writer folded its old sessions: this total holds them)
        return self._show_counter(first)

    def _carry(self, first: int, writer: bytes, held: Held, backer: bytes | None = None) -> None:
        """Keep HELD as the writer's carried total if it is newer than the one carried; BACKER is
        the batch backing it when it moves from the slot (its hold moves with it), else the batch
        being applied."""
        carried, key = self.carried[first].get(writer), (first, writer)
        if carried is not None and not newer(held, carried):
            if backer is not None:
                self._release(backer)
            return
        self.carried[first][writer] = held
        old = self._carried_backer.pop(key, None)
        if backer is None and self._current is not None:
            backer = self._current
            self._holds[backer] += 1
        if backer is not None:
            self._carried_backer[key] = backer
        if old is not None:
            self._release(old)

    def merge_contributions(self, contributions: Iterable[Contribution]) -> list[Delta]:
        moved: dict[int, int] = {}
        for contribution in contributions:
            change = self.contribute(contribution)
            if change:
                moved[contribution.address] = moved.get(contribution.address, 0) + change
        return [(first, change) for first, change in moved.items() if change]

    def total(self, first: int, writer: bytes) -> int:
        """A writer's current total in the counter at FIRST (0 when it has none)."""
        return self.slots[first].get(writer, (0, 0, 0))[2]

    def held(self, first: int, writer: bytes) -> Held | None:
        """A writer's slot in the counter at FIRST: (lamport, session, total), or None."""
        return self.slots[first].get(writer)

    def counter_value(self, first: int) -> int:
        """The counter's shown value (saturated)."""
        return rules.shown(self.counter_sum(first), self.layout.counters[first])

    def counter_sum(self, first: int) -> int:
        """The room's exact sum in the counter at FIRST: every writer's slot, or the sum of its
        sessions in an old store until it folds them (`legacy`)."""
        slots, total = self.slots[first], 0
        for writer, (_, session, own) in slots.items():
            legacy = self.legacy.get((first, writer)) if self.legacy else None
            total += legacy[1] if legacy is not None and session <= legacy[0] else own
        if self.legacy:
            total += sum(s for (f, w), (_, s) in self.legacy.items() if f == first and w not in slots)
        return total

    def _show_counter(self, first: int) -> int:
        """Put the counter's shown value and newest stamp into its bytes; returns the value's change."""
        merge, index = self.layout.counters[first], self.layout.index(first)
        before = rules.decode(bytes(self.values[index : index + merge.width]), merge)
        after = self.counter_value(first)
        lamport, writer = max((lamport, writer) for writer, (lamport, _, _) in self.slots[first].items())
        self.values[index : index + merge.width] = rules.encode(after, merge)
        for i in range(index, index + merge.width):
            self.lamports[i], self.writers[i] = lamport, writer
        return after - before

    def merge(self, entries: Iterable[Entry]) -> list[Run]:
        """Merge a snapshot or a patch; returns the runs whose values changed."""
        changed: list[Run] = []
        for entry in entries:
            changed.extend(self.apply(entry.address, entry.data, entry.lamport, entry.writer))
        return changed

    def entries(self, addresses: Iterable[int] | None = None) -> list[Entry]:
        """The state's bytes (or the given addresses of them) as runs of equal stamp; counters'
        bytes are not entries (their contributions are)."""
        wanted = self.layout.addresses if addresses is None else sorted(set(addresses))
        counter_of = self.layout.counter_of
        return list(self._group(a for a in wanted if counter_of(a) is None))

    def contributions(self, newer_than: int = -1) -> list[Contribution]:
        """Every contribution to every counter (or those stamped after NEWER_THAN)."""
        return [
            Contribution(first, lamport, writer, session, total)
            for first, slots in self.slots.items()
            for writer, (lamport, session, total) in sorted(slots.items())
            if lamport > newer_than
        ]

    def _contribution(self, first: int, writer: bytes) -> Contribution:
        lamport, session, total = self.slots[first][writer]
        return Contribution(first, lamport, writer, session, total)

    def written_runs(self) -> list[Run]:
        """Every byte some peer has written, counters' shown values included, as runs."""
        runs: list[Run] = []
        for entry in self._group(self.layout.addresses):
            if entry.writer != NO_WRITER:
                runs.append((entry.address, entry.data))
        return runs

    def _group(self, addresses: Iterable[int]) -> Iterator[Entry]:
        index = self.layout.index
        start, stamp, data = -1, (0, NO_WRITER), bytearray()
        for address in addresses:
            i = index(address)
            here = (self.lamports[i], self.writers[i])
            if here != stamp or start + len(data) != address:
                if data:
                    yield Entry(start, stamp[0], stamp[1], bytes(data))
                start, stamp, data = address, here, bytearray()
            data.append(self.values[i])
        if data:
            yield Entry(start, stamp[0], stamp[1], bytes(data))

    def digest(self) -> bytes:
        """32 bytes that are equal exactly when two replicas hold the same bytes, stamps and
        contributions."""
        hasher = hashlib.blake2b(digest_size=32)
        hasher.update(self.layout.fingerprint)
        hasher.update(self.values)
        hasher.update(array("q", self.lamports).tobytes())
        for writer in self.writers:
            hasher.update(bytes([len(writer)]) + writer)
        for c in self.contributions():
            hasher.update(_CONTRIBUTION.pack(c.address, c.lamport, len(c.writer), c.session, c.total))
            hasher.update(c.writer)
        for first, carried in self.carried.items():
            for writer, (lamport, session, total) in sorted(carried.items()):
                hasher.update(_CONTRIBUTION.pack(first, lamport, len(writer), session, total) + writer)
        return hasher.digest()

    def copy(self) -> SharedState:
        clone = SharedState(self.layout)
        clone.values[:] = self.values
        clone.lamports[:] = self.lamports
        clone.writers[:] = self.writers
        clone.slots = {first: dict(slots) for first, slots in self.slots.items()}
        clone.batches = dict(self.batches)
        clone._backers = list(self._backers)
        clone._slot_backer = dict(self._slot_backer)
        clone.carried = {first: dict(carried) for first, carried in self.carried.items()}
        clone._carried_backer = dict(self._carried_backer)
        clone.legacy = dict(self.legacy)
        clone._holds = dict(self._holds)
        return clone

    # Durable form: magic, layout fingerprint, then the signed batches as their authors signed them.
    _MAGIC = b"MXSSTATE4"
    _LEGACY_MAGIC = b"MXSSTATE3"  # (protocol 3-5: a counter slot per session, see `load_batches`)

    def to_bytes(self) -> bytes:
        parts = [self._MAGIC, self.layout.fingerprint, struct.pack(">I", len(self.batches))]
        for batch in self.signed_batches():
            parts += [struct.pack(">I", len(batch.raw)), batch.raw]
        return b"".join(parts)

    @classmethod
    def from_bytes(
        cls, layout: Layout, blob: bytes, open_batch: Callable[[bytes], SignedBatch]
    ) -> SharedState:
        """Restore a stored state, every batch checked by OPEN_BATCH (`codec.open_batch`, which
        raises a ValueError); raises ValueError for anything that is not one of ours."""
        legacy = blob.startswith(cls._LEGACY_MAGIC)
        batches = []
        for raw in _parse_stored(layout, blob, cls._LEGACY_MAGIC if legacy else cls._MAGIC):
            batch = open_batch(raw)
            if not all(layout.check_bytes(address, len(data)) for address, data in batch.runs):
                raise ValueError("stored state has bytes outside the regions")
            if any(first not in layout.counters for first, _ in batch.totals):
                raise ValueError("stored state has a counter where there is none")
            batches.append(batch)
        return cls.load_batches(layout, batches, legacy=legacy)

    @classmethod
    def load_batches(
        cls,
        layout: Layout,
        batches: Iterable[SignedBatch],
        *,
        legacy: bool,
        legacy_sums: dict[tuple[int, bytes], tuple[int, int]] | None = None,
    ) -> SharedState:
        """The state these stored batches make (each already checked: signature, addresses).

        A batch whose total is out of its counter's range is left out (stored before such
        batches were refused, issue 30 F4). LEGACY: stored before protocol 6, when each of a
        writer's sessions was a slot of its own and a total any signed number, so a writer's
        totals in its sessions add up; now only its newest session's slot is kept (if its total
        is one protocol 6 takes), and `legacy` keeps, per writer, the newest session and the
        sum (each session's total clamped into the range). The counter counts that sum
        until the writer publishes a total of a newer session: this peer folds its own at once
        (`Replica`), another writer when it next plays. LEGACY_SUMS: such sums kept from an
        earlier load (`peer.storage` stores them, so the old batches need not be)."""
        state, batches = cls(layout), list(batches)
        state.legacy = dict(legacy_sums or {})
        if legacy:
            state.legacy.update(_session_sums(layout, batches))
        for batch in (batch for batch in batches if _totals_in_range(layout, batch)):
            state.apply_batch(batch)
        for first in {first for first, _ in state.legacy} & {f for f, slots in state.slots.items() if slots}:
            state._show_counter(first)
        state.take_dirty()
        state.take_dirty_contributions()
        state.take_batch_changes()
        return state


def newer(held: Held, other: Held) -> bool:
    """Whether a writer's total HELD supersedes OTHER: a newer session, then a newer stamp (then,
    from a broken or hostile writer only, a larger total), so that an old process still running
    beside its restart never takes the slot back (issue 30, F3)."""
    return (held[1], held[0], held[2]) > (other[1], other[0], other[2])


def _totals_in_range(layout: Layout, batch: SignedBatch) -> bool:
    counters = layout.counters
    return all(first in counters and rules.in_range(total, counters[first]) for first, total in batch.totals)


def _session_sums(layout: Layout, batches: Iterable[SignedBatch]) -> dict[tuple[int, bytes], tuple[int, int]]:
    """Per (counter, writer): its newest session and the sum of each session's newest total (a
    total then was any signed number: one past the range counts as the range)."""
    newest: dict[tuple[int, bytes, int], tuple[int, int]] = {}
    for batch in batches:
        for first, total in batch.totals:
            key = (first, batch.author, batch.session)
            top = rules.top(layout.counters[first])
            newest[key] = max(newest.get(key, (-1, 0)), (batch.lamport, min(max(total, -top), top)))
    sums: dict[tuple[int, bytes], dict[int, int]] = {}
    for (first, author, session), (_, total) in newest.items():
        sums.setdefault((first, author), {})[session] = total
    return {key: (max(totals), sum(totals.values())) for key, totals in sums.items()}


def _needed(rule: MergeRule, backers: Sequence[Backer]) -> tuple[Backer, ...]:
    """The few of BACKERS (batches whose values a join byte merged) that give the same value and
    stamp: the newest (its stamp is the byte's), then, newest first, each that adds what the
    kept ones lack (a bit; for `max`/`min` a more extreme value), less any the others then cover.
    The value is the join of all, so it is the join of these: nothing the room sees changes."""
    ordered = sorted(backers, reverse=True)
    newest, rest = ordered[0], ordered[1:]
    if rule in (MergeRule.MAX, MergeRule.MIN):
        pick = max if rule is MergeRule.MAX else min
        extreme = pick(ordered, key=lambda b: b[3])  # (the first of equals: the newest)
        return (newest,) if extreme is newest or extreme[3] == newest[3] else (newest, extreme)
    flip = 0 if rule is MergeRule.BIT_OR else 0xFF  # (bit-and: the bits a backer clears)
    kept, have = [newest], newest[3] ^ flip
    for backer in rest:
        if (backer[3] ^ flip) & ~have:
            kept.append(backer)
            have |= backer[3] ^ flip
    for backer in list(kept[1:]):
        others = 0
        for other in kept:
            if other is not backer:
                others |= other[3] ^ flip
        if (backer[3] ^ flip) & ~others == 0:
            kept.remove(backer)
    return tuple(kept)


_CONTRIBUTION = struct.Struct(">HQBQq")


def _parse_stored(layout: Layout, blob: bytes, magic: bytes) -> list[bytes]:
    if not blob.startswith(magic):
        raise ValueError("not a stored msxsync state")
    offset = len(magic)
    if blob[offset : offset + 8] != layout.fingerprint:
        raise ValueError("stored state is for other regions (the game definition changed)")
    offset += 8
    raws = []
    try:
        (count,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        for _ in range(count):
            (length,) = struct.unpack_from(">I", blob, offset)
            raw = blob[offset + 4 : offset + 4 + length]
            if len(raw) != length:
                raise ValueError("stored state is truncated")
            raws.append(raw)
            offset += 4 + length
    except struct.error:
        raise ValueError("stored state is truncated") from None
    if offset != len(blob):
        raise ValueError("stored state has trailing bytes")
    return raws
