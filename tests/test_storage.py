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

from games.definition import Region
from peer.core.state import Entry, Layout, SharedState
from peer.identity import IdentityError, load_or_create
from peer.storage import RoomStore, rows_for

LAYOUT = Layout([Region(0xE000, 0xE00F)])
WRITER = b"\x07" * 32


def test_saved_bytes_come_back_with_their_stamps(tmp_path):
    state = SharedState(LAYOUT)
    state.apply(0xE000, b"\x01\x02", 10, WRITER)
    store = RoomStore(tmp_path / "db.sqlite", game="demo", room="r", layout=LAYOUT)
    assert store.save(state, [0xE000, 0xE001, 0xE002]) == 2  # unwritten bytes are not stored
    store.close()
    again = RoomStore(tmp_path / "db.sqlite", game="demo", room="r", layout=LAYOUT).load()
    assert again.digest() == state.digest()


def test_a_new_stamp_on_an_unchanged_value_is_saved(tmp_path):
    state = SharedState(LAYOUT)
    store = RoomStore(tmp_path / "db.sqlite", game="demo", room="r", layout=LAYOUT)
    state.apply(0xE000, b"\x05", 10, WRITER)
    store.write_rows(rows_for(state, state.take_dirty()))
    assert state.apply(0xE000, b"\x05", 20, b"\x09" * 32) == []  # no value changed...
    assert state.dirty == {0xE000}  # ...but the stamp did, and must reach the disk
    store.write_rows(rows_for(state, state.take_dirty()))
    assert store.load().digest() == state.digest()


_addresses = st.integers(0xE000, 0xE00F)
_writes = st.tuples(
    _addresses,
    st.binary(min_size=1, max_size=4),
    st.integers(0, 6),  # few stamps and writers: ties and equal values under new stamps are common
    st.sampled_from([b"\x01" * 32, b"\x02" * 32, b"\x03" * 32]),
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
        for kind, write in steps:
            if kind == "write":
                address, data, lamport, writer = write
                data = data[: 0xE010 - address]
                state.merge([Entry(address, lamport, writer, data)])
            else:
                store.write_rows(rows_for(state, state.take_dirty()))
                assert store.load().digest() == state.digest()
        store.write_rows(rows_for(state, state.take_dirty()))
        store.close()
        again = RoomStore(path, game="g", room="r", layout=LAYOUT)
        assert again.load().digest() == state.digest()
        again.close()


def test_rooms_and_definitions_are_kept_apart(tmp_path):
    state = SharedState(LAYOUT)
    state.apply(0xE000, b"\x01", 10, WRITER)
    RoomStore(tmp_path / "db", game="demo", room="r", layout=LAYOUT).save_all(state)
    other_room = RoomStore(tmp_path / "db", game="demo", room="s", layout=LAYOUT).load()
    assert other_room.read(0xE000) == b"\x00"
    changed = Layout([Region(0xE000, 0xE01F)])
    assert RoomStore(tmp_path / "db", game="demo", room="r", layout=changed).load().read(0xE000) == b"\x00"


def test_sessions_are_never_reused(tmp_path):
    sessions = [
        RoomStore(tmp_path / "db", game="demo", room="r", layout=LAYOUT).next_session() for _ in range(3)
    ]
    assert sessions == [1, 2, 3]


def test_a_save_survives_kill_9(tmp_path):
    program = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from games.definition import Region
        from peer.core.state import Layout, SharedState
        from peer.storage import RoomStore
        layout = Layout([Region(0xE000, 0xE00F)])
        store = RoomStore(Path({str(tmp_path / "db")!r}), game="demo", room="r", layout=layout)
        state = SharedState(layout)
        state.apply(0xE003, b"\\x2a", 99, b"\\x07" * 32)
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
    from peer.core.state import Contribution

    layout = Layout([Region(0xE000, 0xE001, Merge(MergeRule.ADD, 2, True)), Region(0xE010, 0xE01F)])
    store = RoomStore(tmp_path / "rooms.sqlite", game="g", room="r", layout=layout)
    state = SharedState(layout)
    state.contribute(Contribution(0xE000, 10, b"\x01" * 32, 1, 40))
    state.contribute(Contribution(0xE000, 11, b"\x02" * 32, 5, 2))
    state.apply(0xE010, b"\x07", 12, b"\x02" * 32)
    store.write_rows(rows_for(state, state.take_dirty()), state.take_dirty_contributions())
    state.contribute(Contribution(0xE000, 13, b"\x01" * 32, 1, 41))  # a newer total of one slot
    store.write_rows([], state.take_dirty_contributions())
    store.close()
    again = RoomStore(tmp_path / "rooms.sqlite", game="g", room="r", layout=layout).load()
    assert again.digest() == state.digest()
    assert again.counter_value(0xE000) == 43 and again.read(0xE000, 2) == b"\x43\x00"
