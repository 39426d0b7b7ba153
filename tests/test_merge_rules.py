"""Merge rules per region: every rule converges, and counters count every change exactly once.

Properties (150 examples each, 10,000 with MSXSYNC_LONG=1):
- per-byte rules (lww, max, min, bit-or, bit-and): any order of the same writes, any number of
  times, gives the same bytes and stamps, and merging snapshots is a join;
- `add`: replicas exchanging messages through the real codec, with deliveries reordered, duplicated
  and dropped, partitions, and restarts from the durable form or from a disk that lagged (saved
  earlier, once the room holds that peer's totals), end identical once healed, every writer's
  totals add up to every delta every game made (modulo the counter's modulus), and the counter
  shows their sum saturated wherever that sum is exact (issue 30 F4, see `merge`).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from games.definition import Merge, MergeRule, Region
from peer.core.sync import codec
from peer.core.sync import merge as rules
from peer.core.sync.replica import Replica
from peer.core.sync.state import Contribution, Layout, SharedState
from tests.sim import ROOM, Mesh, key, open_stored

WRITERS = [bytes([n]) * 32 for n in range(1, 5)]
PER_BYTE = [MergeRule.LWW, MergeRule.MAX, MergeRule.MIN, MergeRule.BIT_OR, MergeRule.BIT_AND]


def layout_for(rule: MergeRule) -> Layout:
    return Layout([Region(0xE000, 0xE007, Merge(rule)), Region(0xE100, 0xE101)])


def writes(layout: Layout) -> st.SearchStrategy[list[tuple[int, int, int, bytes]]]:
    return st.lists(
        st.tuples(
            st.sampled_from(layout.addresses),
            st.integers(0, 255),
            st.integers(1, 50),
            st.sampled_from(WRITERS),
        ),
        max_size=40,
    )


def replay(layout: Layout, ops: list[tuple[int, int, int, bytes]]) -> SharedState:
    state = SharedState(layout)
    for address, value, lamport, writer in ops:
        state.apply(address, bytes([value]), lamport, writer)
    return state


@pytest.mark.parametrize("rule", PER_BYTE, ids=lambda rule: rule.value)
@given(data=st.data())
def test_per_byte_rules_converge_in_any_order_and_are_idempotent(rule, data):
    layout = layout_for(rule)
    ops = data.draw(writes(layout))
    shuffled = data.draw(st.permutations(ops))
    once, reordered = replay(layout, ops), replay(layout, shuffled)
    assert once.digest() == reordered.digest()
    before = once.digest()
    for address, value, lamport, writer in ops:
        assert once.apply(address, bytes([value]), lamport, writer) == []
    assert once.digest() == before


@pytest.mark.parametrize("rule", PER_BYTE, ids=lambda rule: rule.value)
@given(data=st.data())
def test_per_byte_snapshots_merge_as_a_join(rule, data):
    layout = layout_for(rule)
    left_ops, right_ops = data.draw(writes(layout)), data.draw(writes(layout))
    left, right = replay(layout, left_ops), replay(layout, right_ops)
    merged_left, merged_right = left.copy(), right.copy()
    merged_left.merge(right.entries())
    merged_right.merge(left.entries())
    assert merged_left.digest() == merged_right.digest() == replay(layout, left_ops + right_ops).digest()


@pytest.mark.parametrize(
    ("rule", "values", "expected"),
    [
        (MergeRule.MAX, [3, 9, 5], 9),
        (MergeRule.MIN, [7, 2, 5], 2),  # an unwritten byte's 0 is no value: it never wins a min
        (MergeRule.BIT_OR, [0x01, 0x10, 0x04], 0x15),
        (MergeRule.BIT_AND, [0xF7, 0x7F, 0xFE], 0x76),
        (MergeRule.LWW, [3, 9, 5], 5),
    ],
)
def test_each_rule_keeps_what_it_promises(rule, values, expected):
    state = SharedState(layout_for(rule))
    for lamport, value in enumerate(values, start=1):
        state.apply(0xE000, bytes([value]), lamport, WRITERS[lamport % 2])
    assert state.read(0xE000) == bytes([expected])


# ---- counters ----------------------------------------------------------------------------------

COUNTERS = (
    Region(0xE000, 0xE001, Merge(MergeRule.ADD)),  # two 1-byte counters 0-255
    Region(0xE004, 0xE005, Merge(MergeRule.ADD, 2, True)),  # one le16 BCD counter 0-9999
    Region(0xE008, 0xE008, Merge(MergeRule.ADD, 1, True)),  # BCD 00-99, as the demo's coins
    Region(0xE010, 0xE013, Merge(MergeRule.BIT_OR)),
    Region(0xE020, 0xE023),
)
FIRSTS = [0xE000, 0xE001, 0xE004, 0xE008]

counter_ops = st.lists(
    st.one_of(
        st.tuples(st.just("count"), st.integers(0, 2), st.sampled_from(FIRSTS), st.integers(-30, 60)),
        st.tuples(st.just("deliver"), st.integers(0, 1000), st.booleans()),
        st.tuples(st.just("drop"), st.integers(0, 1000)),
        st.tuples(st.just("lose_to"), st.integers(0, 2)),
        st.tuples(st.just("partition"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("restart"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("save"), st.integers(0, 2)),
        st.tuples(st.just("tick"), st.floats(0.0, 4.0)),
    ),
    max_size=60,
)


def restart(mesh: Mesh, index: int, session: int, disk: bytes | None = None) -> None:
    """Replica INDEX stops and starts again from its durable form (or from DISK, saved earlier:
    the disk lagged), with a new session number; what it had in flight is lost."""
    old = mesh.replicas[index]
    blob = old.state.to_bytes() if disk is None else disk
    stored = SharedState.from_bytes(old.state.layout, blob, open_stored())
    mesh.in_flight = [m for m in mesh.in_flight if index not in m[:2]]
    new = Replica(signing_key=key(index), room=ROOM, regions=COUNTERS, session=session, state=stored)
    mesh.replicas[index] = new
    for other in mesh.replicas:
        if other is not new:
            other.remove_peer(new.key)
            other.add_peer(new.key, mesh.now)
            new.add_peer(other.key, mesh.now)
    mesh.collect()


def room_holds_its_totals(mesh: Mesh, index: int) -> bool:
    """Every other replica holds what replica INDEX holds of its own totals (its slot and the one
    carried): a disk that lags it then loses nothing the room cannot give back. (Not covered: a
    peer whose base was stale crashing again, disk lagging again, before it heard the room's
    newer total: what its previous session made after its last save is lost, see `merge`.)"""
    replica = mesh.replicas[index]
    own = [
        (replica.state.slots[f].get(replica.key), replica.state.carried[f].get(replica.key)) for f in FIRSTS
    ]
    return all(
        [(s.slots[f].get(replica.key), s.carried[f].get(replica.key)) for f in FIRSTS] == own
        for s in (other.state for other in mesh.replicas)
    )


def expected_value(first: int, made: list[int]) -> int | None:
    """What the counter shows for these changes, where the room's sum is exact (see `merge`):
    the true sum saturated into the counter's range; None outside the window."""
    top, total = rules.top(Layout(COUNTERS).counters[first]), sum(made)
    return min(max(total, 0), top) if -top <= total <= 3 * top else None


# A restart whose disk lagged, a pickup before its links are up, and the room's replies lost:
# (the room once ended 2 short, issue 30 F3 review; random schedules seldom find it).
LAGGED_RESTART_LOSING_REPLIES = [
    ("count", 0, 0xE000, 10),
    ("save", 0),
    ("count", 0, 0xE000, 2),
    *[("deliver", 0, False)] * 10,
    ("restart", 0, True),
    ("count", 0, 0xE000, 1),
    *[("lose_to", 0), ("deliver", 0, False), ("deliver", 0, False), ("deliver", 0, False)] * 2,
    ("lose_to", 0),
]


@pytest.mark.timeout(1800)  # (the long mode: 10,000 schedules of three replicas)
@given(counter_ops)
@example(LAGGED_RESTART_LOSING_REPLIES)
def test_counters_count_every_change_exactly_once(ops):
    mesh = Mesh.create(3, COUNTERS)
    made: dict[int, list[int]] = {first: [] for first in FIRSTS}
    sessions = 1000
    disks = [replica.state.to_bytes() for replica in mesh.replicas]
    for op in ops:
        match op:
            case ("count", index, first, delta):
                mesh.replicas[index].local_changes([], mesh.now, wall=mesh.wall, deltas=[(first, delta)])
                mesh.collect()
                made[first].append(delta)
            case ("deliver", position, twice) if mesh.in_flight:
                message = mesh.in_flight[position % len(mesh.in_flight)]
                if twice:
                    mesh.in_flight.append(message)
                mesh.deliver(position)
            case ("drop", position) if mesh.in_flight:
                mesh.in_flight.pop(position % len(mesh.in_flight))
            case ("lose_to", index):  # (a link that drops: all on its way to one replica)
                mesh.in_flight = [m for m in mesh.in_flight if m[1] != index]
            case ("partition", a, b) if a != b:
                mesh.blocked.add(frozenset((a, b)))
            case ("save", index):
                disks[index] = mesh.replicas[index].state.to_bytes()
            case ("restart", index, lagging):
                sessions += 1
                lag = lagging and room_holds_its_totals(mesh, index)
                restart(mesh, index, sessions, disks[index] if lag else None)
            case ("tick", seconds):
                mesh.advance(seconds)
    mesh.settle(rounds=6)
    assert mesh.converged()
    for first in FIRSTS:
        for replica in mesh.replicas:
            slots = replica.state.slots[first]
            modulus = 4 * (rules.top(replica.state.layout.counters[first]) + 1)
            assert sum(total for _, _, total in slots.values()) % modulus == sum(made[first]) % modulus
            if (expected := expected_value(first, made[first])) is not None:
                assert replica.state.counter_value(first) == expected


def test_two_players_counting_at_once_keep_every_coin():
    """The issue's measurement in miniature: 50 increments each, concurrently, under `add bcd`."""
    mesh = Mesh.create(2, COUNTERS)
    for _ in range(45):
        for index in (0, 1):
            mesh.replicas[index].local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE008, 1)])
        mesh.collect()
        mesh.deliver_all()
    assert [r.state.read(0xE008) for r in mesh.replicas] == [b"\x90", b"\x90"]  # BCD 90
    for _ in range(10):
        mesh.replicas[0].local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE008, 1)])
    mesh.collect()
    mesh.deliver_all()
    assert [r.state.read(0xE008) for r in mesh.replicas] == [b"\x99", b"\x99"]  # saturated


def test_a_saturated_counter_tells_the_emulator_how_far_it_really_moved():
    mesh = Mesh.create(2, COUNTERS)
    first, second = mesh.replicas
    first.local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE008, 60)])  # its game: 0 -> 60
    second.local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE008, 45)])  # its game: 0 -> 45
    mesh.collect()
    mesh.deliver_all()
    assert first.state.counter_value(0xE008) == 99  # the room holds 105: shown saturated
    assert [e.deltas for e in mesh.changes_seen_by(0)] == [((0xE008, 39),)]  # its game: 60 -> 99
    outcome = first.local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE008, -10)])  # 99 -> 89
    assert first.state.counter_value(0xE008) == 95
    assert outcome.deltas == ((0xE008, 6),)  # so its game shows the room's 95


def test_a_lost_join_is_written_back_into_the_emulator():
    mesh = Mesh.create(2, COUNTERS)
    mesh.write(0, 0xE010, b"\x05")
    outcome = mesh.replicas[0].local_changes([(0xE010, b"\x01")], mesh.now, wall=mesh.wall)
    assert not outcome.runs and outcome.corrections == ((0xE010, b"\x05"),)


def test_counter_bytes_and_deltas():
    bcd16 = Merge(MergeRule.ADD, 2, True)
    assert rules.decode(b"\x99\x09", bcd16) == 999
    assert rules.encode(1000, bcd16) == b"\x00\x10"
    assert rules.encode(123456, bcd16) == b"\x99\x99" and rules.encode(-5, bcd16) == b"\x00\x00"
    assert rules.delta(0, 0x09, 0x10, bcd16) == 1 and rules.delta(1, 0x00, 0x01, bcd16) == 100
    le32 = Merge(MergeRule.ADD, 4)
    assert rules.encode(2**32 + 5, le32) == b"\xff\xff\xff\xff"
    assert rules.delta(1, 0xFF, 0x00, le32) == -255 * 256


def test_a_restart_from_a_disk_that_lagged_takes_nothing():
    """A peer's disk saved its total at 10, the room saw 12, then it crashed: it starts again
    from 10 (its base), counts one, and when the room's 12 of its own comes in, it takes that as
    its base and publishes 13 (one slot for it still)."""
    mesh = Mesh.create(2, COUNTERS)
    mesh.replicas[0].local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE000, 10)])
    stored = mesh.replicas[0].state.to_bytes()  # the disk caught up to 10 only
    mesh.collect()
    mesh.deliver_all()
    mesh.replicas[0].local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE000, 2)])
    mesh.collect()
    mesh.deliver_all()
    assert mesh.replicas[1].state.counter_value(0xE000) == 12
    mesh.advance(0.5)
    older = SharedState.from_bytes(Layout(COUNTERS), stored, open_stored())
    mesh.replicas[0] = Replica(signing_key=key(0), room=ROOM, regions=COUNTERS, session=500, state=older)
    mesh.replicas[0].local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE000, 1)])  # 11, for now
    mesh.replicas[1].remove_peer(mesh.replicas[0].key)
    mesh.replicas[1].add_peer(mesh.replicas[0].key, mesh.now)
    mesh.replicas[0].add_peer(mesh.replicas[1].key, mesh.now)
    mesh.collect()
    mesh.settle()
    assert mesh.converged()
    assert [r.state.counter_value(0xE000) for r in mesh.replicas] == [13, 13]
    assert all(len(r.state.slots[0xE000]) == 1 for r in mesh.replicas)


def test_durable_form_keeps_contributions():
    state = SharedState(Layout(COUNTERS))
    for signer, session, lamport, runs, totals in [
        (key(0), 7, 10, (), ((0xE004, 40000 - 3),)),  # (-3, modulo 4 x 10,000)
        (key(1), 8, 11, (), ((0xE004, 1234),)),
        (key(2), 9, 4, ((0xE010, b"\x03"),), ()),
    ]:
        batch = codec.sign_batch(
            signer, room=ROOM, session=session, lamport=lamport, runs=runs, totals=totals
        )
        state.apply_batch(batch)
    again = SharedState.from_bytes(state.layout, state.to_bytes(), open_stored())
    assert again.digest() == state.digest()
    assert again.counter_value(0xE004) == 1231


def test_bytes_are_never_written_into_a_counter():
    state = SharedState(Layout(COUNTERS))
    with pytest.raises(ValueError, match="counter"):
        state.apply(0xE008, b"\x01", 1, WRITERS[0])
    assert not state.layout.check_bytes(0xE007, 2)


# ---- what the unit tests missed (a mutation review): each of these fails on the named slip ------


def test_a_counter_the_game_moves_from_5_to_6_publishes_plus_one() -> None:
    """The delta is taken from the byte's old value (not from 0: that would publish +6)."""
    from peer.core.emulator.gating import Gate

    gate = Gate(Layout(COUNTERS), None, None)
    runs, deltas = gate.split([(0xE000, b"\x06")], before=[(0xE000, b"\x05")])
    assert runs == [] and deltas == [(0xE000, 1)]
    _, bcd = gate.split([(0xE008, b"\x10")], before=[(0xE008, b"\x09")])  # BCD 09 -> 10
    assert bcd == [(0xE008, 1)]


def test_the_digest_and_a_copy_cover_the_counters_contributions() -> None:
    layout = Layout(COUNTERS)
    one, other = SharedState(layout), SharedState(layout)
    one.contribute(Contribution(0xE000, lamport=1, writer=key(0).verify_key.encode(), session=1, total=3))
    other.contribute(Contribution(0xE000, lamport=1, writer=key(1).verify_key.encode(), session=1, total=3))
    assert one.read(0xE000) == other.read(0xE000)  # the same shown value ...
    assert one.digest() != other.digest()  # ... from other contributions
    clone = one.copy()
    clone.contribute(Contribution(0xE000, lamport=2, writer=key(2).verify_key.encode(), session=1, total=1))
    assert clone.digest() != one.digest() and one.read(0xE000) == b"\x03"  # the original is its own


@pytest.mark.parametrize("text", ["add le16 le32", "add le16 le16", "add bcd bcd"])
def test_a_merge_option_given_twice_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Merge.parse(text)
