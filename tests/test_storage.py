"""Durable room state and the identity key: what is saved survives kill -9; bad files are refused."""

import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from games.definition import Region
from peer.core.sync.state import Layout, SharedState
from peer.identity import IdentityError, load_or_create
from peer.storage import RoomStore, rows_for
from tests.sim import signed

LAYOUT = Layout([Region(0xE000, 0xE00F)])
SIGNERS = [SigningKey(bytes([n]) * 32) for n in range(1, 4)]


def write(state, address, data, lamport, signer=SIGNERS[0], room="r"):
    """A signed write merged into STATE (what the store keeps is signed batches)."""
    return state.apply_batch(signed(signer, lamport, ((address, data),), room=room))[0]


def save(store, state):
    return store.write_rows(rows_for(state, state.take_dirty()), (), *state.take_batch_changes())


def test_saved_bytes_come_back_with_their_stamps(tmp_path):
    state = SharedState(LAYOUT)
    write(state, 0xE000, b"\x01\x02", 10)
    store = RoomStore(tmp_path / "db.sqlite", game="demo", room="r", layout=LAYOUT)
    assert store.save(state, [0xE000, 0xE001, 0xE002]) == 3  # two bytes (unwritten ones are not) and a batch
    store.close()
    again = RoomStore(tmp_path / "db.sqlite", game="demo", room="r", layout=LAYOUT).load()
    assert again.digest() == state.digest()


def test_a_new_stamp_on_an_unchanged_value_is_saved(tmp_path):
    state = SharedState(LAYOUT)
    store = RoomStore(tmp_path / "db.sqlite", game="demo", room="r", layout=LAYOUT)
    write(state, 0xE000, b"\x05", 10)
    save(store, state)
    assert write(state, 0xE000, b"\x05", 20, SIGNERS[1]) == []  # no value changed...
    assert state.dirty == {0xE000}  # ...but the stamp did, and must reach the disk
    save(store, state)
    assert store.load().digest() == state.digest()


_addresses = st.integers(0xE000, 0xE00F)
_writes = st.tuples(
    _addresses,
    st.binary(min_size=1, max_size=4),
    st.integers(0, 6),  # few stamps and writers: ties and equal values under new stamps are common
    st.sampled_from(SIGNERS),
)
_steps = st.lists(st.one_of(st.tuples(st.just("write"), _writes), st.just(("flush", None))), max_size=60)


@settings(max_examples=150, deadline=None)
@given(_steps)
def test_the_disk_equals_memory_after_any_sequence_of_merges(steps) -> None:
    """Whatever the merges decide (new values, new stamps on equal values, writes that lose),
    saving what `take_dirty` names after them leaves the disk equal to memory, stamps included."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "db.sqlite"
        store = RoomStore(path, game="g", room="r", layout=LAYOUT)
        state = SharedState(LAYOUT)
        for kind, step in steps:
            if kind == "write":
                address, data, lamport, signer = step
                write(state, address, data[: 0xE010 - address], lamport + 1, signer)
            else:
                save(store, state)
                assert store.load().digest() == state.digest()
        save(store, state)
        store.close()
        again = RoomStore(path, game="g", room="r", layout=LAYOUT)
        assert again.load().digest() == state.digest()
        again.close()


def test_rooms_and_definitions_are_kept_apart(tmp_path):
    state = SharedState(LAYOUT)
    write(state, 0xE000, b"\x01", 10)
    RoomStore(tmp_path / "db", game="demo", room="r", layout=LAYOUT).save_all(state)
    other_room = RoomStore(tmp_path / "db", game="demo", room="s", layout=LAYOUT).load()
    assert other_room.read(0xE000) == b"\x00"
    changed = Layout([Region(0xE000, 0xE01F)])
    assert RoomStore(tmp_path / "db", game="demo", room="r", layout=changed).load().read(0xE000) == b"\x00"


def test_sessions_are_never_reused(tmp_path):
    stores = [RoomStore(tmp_path / "db", game="demo", room="r", layout=LAYOUT) for _ in range(3)]
    sessions = [store.next_session(wall=5) for store in stores]
    assert sessions == [5 << 16, (5 << 16) + 1, (5 << 16) + 2]


def test_sessions_keep_increasing_when_the_database_is_lost(tmp_path):
    """A counter's slot takes a writer's newest session: a player whose database was moved
    away must not start again below the sessions the room holds of its key."""
    before = RoomStore(tmp_path / "old", game="demo", room="r", layout=LAYOUT).next_session()
    after = RoomStore(tmp_path / "new", game="demo", room="r", layout=LAYOUT).next_session()
    assert after >= before > 1_700_000_000 << 16


def test_a_save_survives_kill_9(tmp_path):
    program = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from games.definition import Region
        from nacl.signing import SigningKey
        from peer.core.sync import codec
        from peer.core.sync.state import Layout, SharedState
        from peer.storage import RoomStore
        layout = Layout([Region(0xE000, 0xE00F)])
        store = RoomStore(Path({str(tmp_path / "db")!r}), game="demo", room="r", layout=layout)
        state = SharedState(layout)
        signer = SigningKey(b"\\x07" * 32)
        state.apply_batch(
            codec.sign_batch(signer, room="r", session=1, lamport=99, runs=((0xE003, b"\\x2a"),), totals=())
        )
        store.save(state, [0xE003])
        print("saved", flush=True)
        sys.stdin.read()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "saved"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    restored = RoomStore(tmp_path / "db", game="demo", room="r", layout=LAYOUT).load()
    assert restored.read(0xE003) == b"\x2a"
    assert restored.lamports[3] == 99


def test_identity_is_created_private_and_loaded_again(tmp_path):
    key = load_or_create(tmp_path)
    path = tmp_path / "identity.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bytes(load_or_create(tmp_path)) == bytes(key)
    path.chmod(0o644)
    load_or_create(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", [b"hello", b"msxsync-ed25519-v1\nzz\n", b"msxsync-ed25519-v1\nabcd\n"])
def test_a_damaged_identity_is_refused_not_replaced(tmp_path, content):
    (tmp_path / "identity.key").write_bytes(content)
    with pytest.raises(IdentityError, match="move it away"):
        load_or_create(tmp_path)
    assert (tmp_path / "identity.key").read_bytes() == content


def test_counters_come_back_as_every_contribution(tmp_path):
    from games.definition import Merge, MergeRule
    from peer.core.sync import codec

    layout = Layout([Region(0xE000, 0xE001, Merge(MergeRule.ADD, 2, True)), Region(0xE010, 0xE01F)])
    store = RoomStore(tmp_path / "rooms.sqlite", game="g", room="r", layout=layout)
    state = SharedState(layout)

    def count(signer, session, lamport, total, runs=()):
        state.apply_batch(
            codec.sign_batch(
                signer, room="r", session=session, lamport=lamport, runs=runs, totals=((0xE000, total),)
            )
        )
        store.write_rows(
            rows_for(state, state.take_dirty()), state.take_dirty_contributions(), *state.take_batch_changes()
        )

    count(SIGNERS[0], 1, 10, 40)
    count(SIGNERS[1], 5, 12, 2, ((0xE010, b"\x07"),))
    count(SIGNERS[0], 1, 13, 41)  # a newer total of one slot
    store.close()
    again = RoomStore(tmp_path / "rooms.sqlite", game="g", room="r", layout=layout).load()
    assert again.digest() == state.digest()
    assert again.counter_value(0xE000) == 43 and again.read(0xE000, 2) == b"\x43\x00"


def test_a_store_from_before_protocol_6_loads_folded_and_sheds_its_slots(tmp_path):
    """Issue 30, F3: a store that kept a counter slot per session (a player's three sessions, a
    member's 300 and one pin of -(2^63-1)) loads with one slot per writer, and the first save
    deletes what backs nothing and marks the store, so the fold is done once."""
    import sqlite3

    from games.definition import Merge, MergeRule
    from peer.core.sync import codec

    layout = Layout([Region(0xE000, 0xE001, Merge(MergeRule.ADD, 2, True))])
    path = tmp_path / "rooms.sqlite"
    store = RoomStore(path, game="g", room="r", layout=layout)
    batches = [
        codec.sign_batch(SIGNERS[0], room="r", session=s, lamport=10 + s, runs=(), totals=((0xE000, 40),))
        for s in range(1, 4)
    ]
    batches += [
        codec.sign_batch(SIGNERS[2], room="r", session=s, lamport=100 + s, runs=(), totals=((0xE000, 0),))
        for s in range(300)
    ]
    batches.append(
        codec.sign_batch(
            SIGNERS[2], room="r", session=9, lamport=999, runs=(), totals=((0xE000, -(2**63 - 1)),)
        )
    )
    store.write_rows([], (), batches)
    store._db.execute("DELETE FROM meta WHERE key = 'totals'")  # (as a store before protocol 6)
    store.close()
    store = RoomStore(path, game="g", room="r", layout=layout)
    state = store.load()
    assert len(state.slots[0xE000]) == 2 and len(state.batches) == 4  # (each slot, each session before)
    writers = [signer.verify_key.encode() for signer in SIGNERS]
    sums = {(0xE000, writers[0]): (3, 120), (0xE000, writers[2]): (299, -9999)}  # (clamped)
    assert state.legacy == sums
    store.write_rows([], state.take_dirty_contributions(), *state.take_batch_changes())
    store.close()
    rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM batches").fetchone()[0]
    assert rows == 4  # (305 before the save)
    again = RoomStore(path, game="g", room="r", layout=layout).load()
    assert again.legacy == sums and again.counter_value(0xE000) == 0  # (120 - 9999, shown saturated)


def test_a_stored_batch_that_was_tampered_with_is_not_loaded(tmp_path):
    state = SharedState(LAYOUT)
    write(state, 0xE000, b"\x05", 10)
    store = RoomStore(tmp_path / "db", game="demo", room="r", layout=LAYOUT)
    save(store, state)
    (raw,) = store._db.execute("SELECT raw FROM batches").fetchone()
    changed = bytearray(raw)
    changed[-65] = 0xFF
    store._db.execute("UPDATE batches SET raw = ?", (bytes(changed),))
    assert store.load().read(0xE000) == b"\x00"


async def test_a_failed_save_loses_nothing_and_is_tried_again(tmp_path, monkeypatch, caplog):
    """Disk full mid-game: what a save took goes back, a later save writes it with what came since;
    the saving task tries again by itself and says so once."""
    import asyncio
    import sqlite3

    import peer.persistence
    from peer.persistence import Persistence

    monkeypatch.setattr(peer.persistence, "SAVE_RETRY", 0.05)
    persistence = Persistence(tmp_path / "db.sqlite", game="demo", layout=LAYOUT)
    state, _ = await persistence.open("r")
    store, loop, saved = persistence._store, asyncio.get_running_loop(), asyncio.Event()
    assert store is not None
    real_write, failures = store.write_rows, list[object]()

    def full_disk(*args):
        if len(failures) < 3:
            failures.append(args)
            raise sqlite3.OperationalError("database or disk is full")
        written = real_write(*args)
        loop.call_soon_threadsafe(saved.set)
        return written

    monkeypatch.setattr(store, "write_rows", full_disk)
    write(state, 0xE000, b"\x01", 10)
    with pytest.raises(sqlite3.OperationalError):
        await persistence.flush(state)
    assert state.dirty == {0xE000} and state.has_dirty  # put back
    write(state, 0xE001, b"\x02", 11)
    saver = asyncio.create_task(persistence.run(lambda: state))
    persistence.changed()
    async with asyncio.timeout(5):
        await saved.wait()  # (the write is committed when this is set)
    again = RoomStore(tmp_path / "db.sqlite", game="demo", room="r", layout=LAYOUT).load()
    saver.cancel()
    await asyncio.gather(saver, return_exceptions=True)
    persistence.close()
    assert len(failures) == 3
    assert again.digest() == state.digest() and again.read(0xE000, 2) == b"\x01\x02"
    errors = [r for r in caplog.records if "could not save" in r.getMessage()]
    assert len(errors) == 1  # the task's two failures: said once


def test_a_database_of_another_program_is_refused_with_what_to_do(tmp_path):
    import sqlite3

    from peer.storage import StorageError

    path = tmp_path / "db.sqlite"
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE batches (x INTEGER); CREATE TABLE meta (room TEXT, key TEXT, value TEXT);")
    db.execute("INSERT INTO meta VALUES (?, 'session', 'abc')", (f"demo\x00r\x00{LAYOUT.fingerprint.hex()}",))
    db.commit()
    db.close()
    store = RoomStore(path, game="demo", room="r", layout=LAYOUT)
    with pytest.raises(StorageError, match=r"move rooms\.sqlite"):
        store.next_session()
    with pytest.raises(StorageError, match=r"move rooms\.sqlite"):
        store.load()
