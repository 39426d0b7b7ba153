"""Per-byte last-writer-wins state over a game's shared regions.

Every shared byte carries (value, lamport, writer); a write wins when its (lamport, writer) pair is
greater than the byte's current one, writers being 32-byte keys compared as bytes. Should one writer
ever use one stamp for two values (only a broken or hostile peer can), the larger value wins, so even
then every replica picks the same byte. The rule is a join on a total order, so any replicas that
received the same writes in any order, any number of times, hold the same bytes: that is the whole
convergence argument, and the property tests check it.

This module owns the state and its durable serialisation. It knows nothing of messages, peers or
time; addresses handed to it must already be inside the regions (`Layout.check_run` says so).

What must reach the disk is what the merge decided, value *and* stamp: a write of an unchanged value
under a newer stamp changes no byte but must be saved, or after a restart the disk would hold the older
stamp (or none) and the replica would disagree with the room. So the state keeps the set of addresses
whose stamp moved (`dirty`), and the persistence drains it (`take_dirty`).
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from games.definition import Region, check_no_overlap

Run = tuple[int, bytes]  # (first address, bytes)
NO_WRITER = b""  # the writer of bytes nobody has written yet; loses to every real write


@dataclass(frozen=True, slots=True)
class Entry:
    """A run of consecutive bytes that share one stamp (the unit of snapshots and patches)."""

    address: int
    lamport: int
    writer: bytes
    data: bytes


class Layout:
    """Maps CPU addresses to positions in the flat state arrays."""

    def __init__(self, regions: Sequence[Region]) -> None:
        check_no_overlap(regions)
        self.regions = tuple(sorted(regions, key=lambda region: region.start))
        self._index = array("l", [-1]) * 0x10000
        self.addresses: list[int] = []
        for region in self.regions:
            for address in range(region.start, region.end + 1):
                self._index[address] = len(self.addresses)
                self.addresses.append(address)
        self.size = len(self.addresses)
        description = ",".join(f"{r.start:04x}-{r.end:04x}" for r in self.regions).encode()
        self.fingerprint = hashlib.blake2b(description, digest_size=8).digest()

    def index(self, address: int) -> int:
        """Position of a shared address, or -1."""
        return self._index[address] if 0 <= address <= 0xFFFF else -1

    def check_run(self, address: int, length: int) -> bool:
        """True when every byte of the run is shared."""
        if length <= 0 or address < 0 or address + length > 0x10000:
            return False
        index = self._index
        return all(index[a] >= 0 for a in range(address, address + length))


class SharedState:
    """The replica's view of every shared byte, with the stamp that put it there."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.values = bytearray(layout.size)
        self.lamports = [0] * layout.size
        self.writers = [NO_WRITER] * layout.size
        self.dirty: set[int] = set()
        """Addresses whose value or stamp changed since the last `take_dirty`."""

    def take_dirty(self) -> set[int]:
        """The addresses to save now (and forget them)."""
        dirty, self.dirty = self.dirty, set()
        return dirty

    @property
    def max_lamport(self) -> int:
        return max(self.lamports, default=0)

    def read(self, address: int, length: int = 1) -> bytes:
        start = self.layout.index(address)
        return bytes(self.values[i] for i in range(start, start + length))

    def apply(self, address: int, data: bytes, lamport: int, writer: bytes) -> list[Run]:
        """Merge one run written under one stamp; returns the runs whose *values* changed."""
        index = self.layout.index
        values, lamports, writers, dirty = self.values, self.lamports, self.writers, self.dirty
        changed: list[Run] = []
        run_start, run_bytes = -1, bytearray()
        for offset, value in enumerate(data):
            i = index(address + offset)
            if (lamport, writer, value) > (lamports[i], writers[i], values[i]):
                lamports[i] = lamport
                writers[i] = writer
                dirty.add(address + offset)
                if values[i] != value:
                    values[i] = value
                    if run_start + len(run_bytes) != address + offset:
                        if run_bytes:
                            changed.append((run_start, bytes(run_bytes)))
                        run_start, run_bytes = address + offset, bytearray()
                    run_bytes.append(value)
        if run_bytes:
            changed.append((run_start, bytes(run_bytes)))
        return changed

    def apply_runs(self, runs: Iterable[Run], lamport: int, writer: bytes) -> list[Run]:
        changed: list[Run] = []
        for address, data in runs:
            changed.extend(self.apply(address, data, lamport, writer))
        return changed

    def merge(self, entries: Iterable[Entry]) -> list[Run]:
        """Merge a snapshot or a patch; returns the runs whose values changed."""
        changed: list[Run] = []
        for entry in entries:
            changed.extend(self.apply(entry.address, entry.data, entry.lamport, entry.writer))
        return changed

    def entries(self, addresses: Iterable[int] | None = None) -> list[Entry]:
        """The state (or the given addresses of it) as runs of equal stamp."""
        wanted = self.layout.addresses if addresses is None else sorted(set(addresses))
        return list(self._group(wanted))

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
        """32 bytes that are equal exactly when two replicas hold the same bytes and stamps."""
        hasher = hashlib.blake2b(digest_size=32)
        hasher.update(self.layout.fingerprint)
        hasher.update(self.values)
        hasher.update(array("q", self.lamports).tobytes())
        for writer in self.writers:
            hasher.update(bytes([len(writer)]) + writer)
        return hasher.digest()

    def copy(self) -> SharedState:
        clone = SharedState(self.layout)
        clone.values[:] = self.values
        clone.lamports[:] = self.lamports
        clone.writers[:] = self.writers
        return clone

    # Durable form: magic, layout fingerprint, then the entries. Nothing else is needed to resume.
    _MAGIC = b"MXSSTATE1"
    _ENTRY = struct.Struct(">HHQB")

    def to_bytes(self) -> bytes:
        parts = [self._MAGIC, self.layout.fingerprint]
        entries = [e for e in self.entries() if e.writer != NO_WRITER]
        parts.append(struct.pack(">I", len(entries)))
        for entry in entries:
            parts.append(self._ENTRY.pack(entry.address, len(entry.data), entry.lamport, len(entry.writer)))
            parts.append(entry.writer)
            parts.append(entry.data)
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, layout: Layout, blob: bytes) -> SharedState:
        """Restore a stored state; raises ValueError for anything that is not one of ours."""
        state = cls(layout)
        state.merge(_parse_stored(layout, blob))
        state.take_dirty()
        return state


def _parse_stored(layout: Layout, blob: bytes) -> list[Entry]:
    magic = SharedState._MAGIC
    if not blob.startswith(magic):
        raise ValueError("not a stored msxsync state")
    offset = len(magic)
    if blob[offset : offset + 8] != layout.fingerprint:
        raise ValueError("stored state is for other regions (the game definition changed)")
    offset += 8
    try:
        (count,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        entries = []
        for _ in range(count):
            address, length, lamport, writer_length = SharedState._ENTRY.unpack_from(blob, offset)
            offset += SharedState._ENTRY.size
            writer = blob[offset : offset + writer_length]
            data = blob[offset + writer_length : offset + writer_length + length]
            offset += writer_length + length
            if len(writer) != writer_length or len(data) != length:
                raise ValueError("stored state is truncated")
            if not layout.check_run(address, length):
                raise ValueError(f"stored state has bytes outside the regions at {address:04x}")
            entries.append(Entry(address, lamport, writer, data))
    except struct.error:
        raise ValueError("stored state is truncated") from None
    if offset != len(blob):
        raise ValueError("stored state has trailing bytes")
    return entries
