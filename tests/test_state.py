"""Per-byte last-writer-wins state: merge laws, grouping into entries, durable form."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from games.definition import Region
from peer.core.sync.state import Entry, Layout, SharedState
from tests.sim import key, open_stored, signed

LAYOUT = Layout([Region(0xE000, 0xE00F), Region(0xE100, 0xE103)])
ADDRESSES = LAYOUT.addresses
WRITERS = sorted(bytes(key(n).verify_key) for n in range(4))  # in the order ties break

writes = st.lists(
    st.tuples(
        st.sampled_from(ADDRESSES),
        st.integers(0, 255),
        st.integers(1, 50),
        st.sampled_from(WRITERS),
    ),
    max_size=40,
)


def replay(ops):
    state = SharedState(LAYOUT)
    for address, value, lamport, writer in ops:
        state.apply(address, bytes([value]), lamport, writer)
    return state


@given(writes, st.randoms())
def test_any_order_gives_the_same_state(ops, rnd):
    shuffled = list(ops)
    rnd.shuffle(shuffled)
    assert replay(ops).digest() == replay(shuffled).digest()


@given(writes)
def test_applying_twice_changes_nothing(ops):
    state = replay(ops)
    before = state.digest()
    for address, value, lamport, writer in ops:
        assert state.apply(address, bytes([value]), lamport, writer) == []
    assert state.digest() == before


@given(writes, writes)
def test_merging_snapshots_is_a_join(left_ops, right_ops):
    left, right = replay(left_ops), replay(right_ops)
    both = replay(left_ops + right_ops)
    merged_left = left.copy()
    merged_left.merge(right.entries())
    merged_right = right.copy()
    merged_right.merge(left.entries())
    assert merged_left.digest() == merged_right.digest() == both.digest()


def test_higher_stamp_wins_and_ties_break_on_writer():
    state = SharedState(LAYOUT)
    assert state.apply(0xE000, b"\x05", 10, WRITERS[0]) == [(0xE000, b"\x05")]
    assert state.apply(0xE000, b"\x06", 9, WRITERS[3]) == []
    assert state.apply(0xE000, b"\x07", 10, WRITERS[1]) == [(0xE000, b"\x07")]
    assert state.apply(0xE000, b"\x08", 10, WRITERS[0]) == []
    assert state.read(0xE000) == b"\x07"


def test_changes_are_reported_as_runs_of_changed_values_only():
    state = SharedState(LAYOUT)
    state.apply(0xE000, b"\x00\x01\x02\x03", 1, WRITERS[0])
    changed = state.apply(0xE000, b"\x00\x01\x09\x09", 2, WRITERS[0])
    assert changed == [(0xE002, b"\x09\x09")]


def test_entries_group_equal_stamps_and_split_at_region_gaps():
    state = SharedState(LAYOUT)
    state.apply(0xE00E, b"\x01\x02", 3, WRITERS[0])
    state.apply(0xE100, b"\x03", 3, WRITERS[0])
    entries = [e for e in state.entries() if e.lamport]
    assert entries == [Entry(0xE00E, 3, WRITERS[0], b"\x01\x02"), Entry(0xE100, 3, WRITERS[0], b"\x03")]
    assert state.entries([0xE00F]) == [Entry(0xE00F, 3, WRITERS[0], b"\x02")]


SIGNERS = {bytes(k.verify_key): k for k in (key(n) for n in range(4))}


def replay_signed(ops):
    """The same writes as signed batches, each by one of four real keys."""
    state = SharedState(LAYOUT)
    for address, value, lamport, writer in ops:
        signer = SIGNERS[writer]
        state.apply_batch(signed(signer, lamport, ((address, bytes([value])),)))
    return state


@given(writes)
def test_durable_form_round_trips(ops):
    state = replay_signed(ops)
    assert SharedState.from_bytes(LAYOUT, state.to_bytes(), open_stored()).digest() == state.digest()


@given(writes)
def test_only_batches_that_still_hold_a_byte_are_kept(ops):
    state = replay_signed(ops)
    index = LAYOUT.index
    backing = {
        (a, state.lamports[index(a)], state.writers[index(a)]) for a in ADDRESSES if state.writers[index(a)]
    }
    kept = {(a, b.lamport, b.author) for b in state.batches.values() for a, _ in b.runs}
    assert kept == backing


def test_durable_form_refuses_what_is_not_ours():
    blob = replay_signed([(0xE000, 1, 1, WRITERS[0])]).to_bytes()
    other = Layout([Region(0xE000, 0xE001)])
    with pytest.raises(ValueError, match="other regions"):
        SharedState.from_bytes(other, blob, open_stored())
    with pytest.raises(ValueError, match="truncated"):
        SharedState.from_bytes(LAYOUT, blob[:-1], open_stored())
    with pytest.raises(ValueError, match="not a stored"):
        SharedState.from_bytes(LAYOUT, b"junk", open_stored())
    with pytest.raises(ValueError, match="trailing"):
        SharedState.from_bytes(LAYOUT, blob + b"x", open_stored())
    forged = bytearray(blob)
    forged[-65] ^= 1  # the last batch's byte
    with pytest.raises(ValueError, match="bad_batch_signature"):
        SharedState.from_bytes(LAYOUT, bytes(forged), open_stored())


def test_layout_checks_runs():
    assert LAYOUT.check_run(0xE000, 16)
    assert not LAYOUT.check_run(0xE000, 17)
    assert not LAYOUT.check_run(0xE0FF, 2)
    assert not LAYOUT.check_run(0xFFFF, 2)
    assert not LAYOUT.check_run(0xE000, 0)
    assert LAYOUT.index(0x10000) == -1
