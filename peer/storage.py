"""Durable room state on the player's disk: nothing accepted is lost to `kill -9` or a power cut.

One SQLite database per state folder, in WAL mode with `synchronous=FULL`: each `save` is one
transaction that is on disk (fsync'd) when it returns. A room is keyed by game, room name and the
regions' fingerprint, so a changed definition starts clean instead of mis-reading old bytes.

Why SQLite rather than rewriting a file atomically: a save touches only the bytes that changed, so
its cost does not grow with the size of the regions, and the WAL turns it into one appended page and
one fsync (`scripts/bench_storage.py` measures both ways side by side).

Sessions: every start takes the next session number from the database, committed before it is
used, so the pair (session, sequence number) that signs a message is never reused, even after a
crash. It is at least the wall clock's seconds times 65,536 (`codec.session_floor`), so that
sessions keep increasing for the room even when the database is lost or moved away: a counter's
slot takes a writer's newest session (`peer.core.sync.merge`), and a session numbered below one
the room holds would count nothing.
The store is synchronous: call it from one worker thread, not the event loop.

Counters (`add` regions) are loaded from the signed batches that back their slots (each writer's
newest total, and the newest of its session before, `SharedState.carried`), never from bytes: the
value is the sum of the slots, so a restart keeps every writer's total. A save writes the slots as
`contributions` rows too, one per (counter, writer), for tools only (see below).

A store written before protocol 6 (no `totals` row in `meta`) kept one counter slot per session:
it is loaded as such (`SharedState.load_batches(legacy=True)`): per writer with several sessions,
the sum of their totals and its newest session. The first save marks the store and, in the same
transaction, writes these sums to the `legacy` table and deletes the superseded batches; each sum
keeps counting for its writer, on every later load too, until a total of a newer session of that
writer's arrives (this peer folds its own at its first timer; another player when it next plays),
so the upgrade takes nobody's coins away even if this peer stops before it folds its own.

Signed authorship (protocol 3): what is loaded is the `batches` table, the signed batches that
back the current state (`SharedState.batches`), each checked against its author's signature on
load; a batch that fails is skipped. The `bytes` and `contributions` rows are still written (they
show what the merge decided, for tools), but never loaded: they carry no signature, and a peer that
loaded them could not prove them to anyone. A store written by an older msxsync therefore starts
empty, and the room gives the peer its state back.

One session per state folder: `folder_lock` holds an advisory lock on `<folder>/lock` for the
session's life (released by the kernel when the process ends, however it ends).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import filelock

from peer.core.sync import codec
from peer.core.sync.state import NO_WRITER, Contribution, Layout, SharedState, SignedBatch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    room TEXT NOT NULL, key TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (room, key)
);
CREATE TABLE IF NOT EXISTS bytes (
    room TEXT NOT NULL, address INTEGER NOT NULL, value INTEGER NOT NULL,
    lamport INTEGER NOT NULL, writer BLOB NOT NULL, PRIMARY KEY (room, address)
);
CREATE TABLE IF NOT EXISTS batches (
    room TEXT NOT NULL, id BLOB NOT NULL, raw BLOB NOT NULL, PRIMARY KEY (room, id)
);
CREATE TABLE IF NOT EXISTS legacy (
    room TEXT NOT NULL, address INTEGER NOT NULL, writer BLOB NOT NULL, session INTEGER NOT NULL,
    total INTEGER NOT NULL, PRIMARY KEY (room, address, writer)
);
CREATE TABLE IF NOT EXISTS contributions (
    room TEXT NOT NULL, address INTEGER NOT NULL, writer BLOB NOT NULL, session INTEGER NOT NULL,
    lamport INTEGER NOT NULL, total INTEGER NOT NULL, PRIMARY KEY (room, address, writer, session)
);
"""


Row = tuple[int, int, int, bytes]  # address, value, lamport, writer
TOTALS_FORMAT = 6  # `meta` row 'totals': counter totals are per writer, not per session


def rows_for(state: SharedState, addresses: Iterable[int]) -> list[Row]:
    """The stamped bytes at `addresses` as plain rows (bytes nobody wrote are not worth storing)."""
    index, counter_of = state.layout.index, state.layout.counter_of
    rows = []
    for address in sorted(set(addresses)):
        i = index(address)
        if i >= 0 and state.writers[i] != NO_WRITER and counter_of(address) is None:
            rows.append((address, state.values[i], state.lamports[i], state.writers[i]))
    return rows


class StorageError(RuntimeError):
    """The state folder's database cannot be used; the message says what to do."""


LOCK_FILE = "lock"


@contextlib.contextmanager
def folder_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state folder for one session: two peers sharing a folder would share an
    identity (the rendezvous lets only one of them stay) and interleave the room state.

    The lock is filelock's (flock on POSIX, LockFileEx on Windows): the system releases it when
    the process ends, however it ends, so a crashed peer never leaves it held."""
    lock = filelock.FileLock(state_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise StorageError(
            f"another msxsync-peer is using the state folder {state_dir}; "
            "give each player on this machine their own --state-dir."
        ) from None
    except (OSError, NotImplementedError) as exc:  # (no locking on that file system)
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise StorageError(
            f"cannot use the state folder {state_dir} ({reason}); pick another with --state-dir."
        ) from None
    try:
        yield
    finally:
        lock.release()


class RoomStore:
    def __init__(self, path: Path, *, game: str, room: str, layout: Layout) -> None:
        self.layout = layout
        self.room = room
        self.key = f"{game}\x00{room}\x00{layout.fingerprint.hex()}"
        self._superseded: list[bytes] = []  # stored batch ids the loaded state does not keep
        self._legacy_new: list[tuple[int, bytes, int, int]] = []  # old sessions' sums to keep
        self._legacy_gone: list[tuple[int, bytes]] = []  # sums a newer session has folded
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot use the state database {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def next_session(self, wall: float | None = None) -> int:
        """A session number above every one this store gave, and at least the floor of WALL
        (seconds since the epoch, now by default; `codec.session_floor`)."""
        try:
            return self._next_session(codec.session_floor(time.time() if wall is None else wall))
        except (sqlite3.Error, TypeError, ValueError) as exc:  # (a table of another program)
            raise StorageError(self._damaged(exc)) from exc

    def _damaged(self, exc: Exception) -> str:
        return (
            f"the state database cannot be read ({exc}): move rooms.sqlite out of the state folder "
            "(or pick another --state-dir); the room's players will give you its state again."
        )

    def _next_session(self, floor: int) -> int:
        with self._transaction():
            row = self._db.execute(
                "SELECT value FROM meta WHERE room = ? AND key = 'session'", (self.key,)
            ).fetchone()
            session = max((row[0] if row else 0) + 1, floor)
            self._db.execute(
                "INSERT OR REPLACE INTO meta (room, key, value) VALUES (?, 'session', ?)",
                (self.key, session),
            )
        return session

    def load(self) -> SharedState:
        """The stored state of this room (empty when there is none); batches whose signature
        or addresses are wrong are skipped."""
        try:
            rows = [raw for (raw,) in self._db.execute("SELECT raw FROM batches WHERE room = ?", (self.key,))]
            legacy = (
                rows
                and not self._db.execute(
                    "SELECT 1 FROM meta WHERE room = ? AND key = 'totals'", (self.key,)
                ).fetchone()
            )
            sums = self._legacy_sums()
        except sqlite3.Error as exc:
            raise StorageError(self._damaged(exc)) from exc
        batches = [batch for batch in map(self._open, rows) if batch is not None]
        state = SharedState.load_batches(self.layout, batches, legacy=bool(legacy), legacy_sums=sums)
        # What backs nothing (an old store's superseded sessions, a flood's slots, a batch out of
        # range) goes with the first save, which marks the store as protocol 6's and, in the same
        # transaction, keeps each writer's sum of its old sessions (`legacy`) until a newer
        # session of its folds them: this peer's own at its first timer (`Replica`), another
        # player's when it next plays; until then the counter counts the sum, as it did.
        self._superseded = [
            raw[-codec.SIGNATURE_SIZE :]
            for raw in rows
            if isinstance(raw, bytes) and raw[-codec.SIGNATURE_SIZE :] not in state.batches
        ]
        if legacy:
            self._legacy_new = [(first, writer, *held) for (first, writer), held in state.legacy.items()]
        self._legacy_gone = [key for key in sums if key not in state.legacy]
        return state

    def _legacy_sums(self) -> dict[tuple[int, bytes], tuple[int, int]]:
        """The stored sums of old sessions (rows that are not ours to read are skipped)."""
        sums = {}
        for address, writer, session, total in self._db.execute(
            "SELECT address, writer, session, total FROM legacy WHERE room = ?", (self.key,)
        ):
            if address not in self.layout.counters or not isinstance(writer, bytes) or len(writer) != 32:
                continue
            if isinstance(session, int) and isinstance(total, int):
                sums[(address, writer)] = (session, total)
        return sums

    def _open(self, raw: object) -> SignedBatch | None:
        if not isinstance(raw, bytes):
            return None
        if len(raw) > codec.MAX_BATCH_SIZE:  # (stored before such batches were refused)
            return None
        try:
            batch = codec.open_batch(raw, room=self.room, authors=None, max_runs=self.layout.size)
        except codec.DecodeError:
            return None
        layout = self.layout
        if not all(layout.check_bytes(address, len(data)) for address, data in batch.runs):
            return None
        if any(first not in layout.counters for first, _ in batch.totals):
            return None
        return batch

    def save(self, state: SharedState, addresses: Iterable[int]) -> int:
        """Store the current value and stamp of `addresses` and the batch changes; returns how
        many rows were written."""
        return self.write_rows(rows_for(state, addresses), (), *state.take_batch_changes())

    def write_rows(
        self,
        rows: list[Row],
        contributions: Iterable[Contribution] = (),
        batches: Iterable[SignedBatch] = (),
        dropped: Iterable[bytes] = (),
    ) -> int:
        """Write rows taken with `rows_for`, contributions taken with
        `SharedState.take_dirty_contributions` and the batch changes of `take_batch_changes`, in
        one transaction (may run in a worker thread: all are plain values)."""
        counted = [(self.key, c.address, c.writer, c.session, c.lamport, c.total) for c in contributions]
        kept = [(self.key, b.id, b.raw) for b in batches]
        gone = [(self.key, i) for i in [*dropped, *self._superseded]]
        legacy_new = [(self.key, *row) for row in self._legacy_new]
        legacy_gone = [(self.key, *key) for key in self._legacy_gone]
        if rows or counted or kept or gone or legacy_new or legacy_gone:
            with self._transaction():
                self._db.execute(
                    "INSERT OR REPLACE INTO meta (room, key, value) VALUES (?, 'totals', ?)",
                    (self.key, TOTALS_FORMAT),
                )
                self._db.executemany(
                    "DELETE FROM contributions WHERE room = ? AND address = ? AND writer = ?",
                    [row[:3] for row in counted],
                )
                self._db.executemany("INSERT OR REPLACE INTO batches (room, id, raw) VALUES (?, ?, ?)", kept)
                self._db.executemany("DELETE FROM batches WHERE room = ? AND id = ?", gone)
                self._db.executemany(
                    "INSERT OR REPLACE INTO legacy (room, address, writer, session, total) "
                    "VALUES (?, ?, ?, ?, ?)",
                    legacy_new,
                )
                self._db.executemany(
                    "DELETE FROM legacy WHERE room = ? AND address = ? AND writer = ?", legacy_gone
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO bytes (room, address, value, lamport, writer) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(self.key, *row) for row in rows],
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO contributions (room, address, writer, session, lamport, total) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    counted,
                )
            self._superseded, self._legacy_new, self._legacy_gone = [], [], []
        return len(rows) + len(counted) + len(kept) + len(gone)

    def save_all(self, state: SharedState) -> int:
        self._db.execute("DELETE FROM batches WHERE room = ?", (self.key,))
        batches = state.signed_batches()
        return self.write_rows(rows_for(state, self.layout.addresses), state.contributions(), batches)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
