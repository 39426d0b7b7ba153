"""A member cannot grow the room's counters and join bytes without bound, nor pin a counter
(issue 30, F3 and F4). Real `Replica`s and `SharedState`s; every message through the real codec.

- F3: a member signing a new session per batch, each adding nothing, once left one slot per
  session on every peer (5,320 sessions: 10,646 slots), and a joiner could no longer take an
  honest member's full state; a losing `bit-or` value under newer stamps left one backer per write.
- F4: one batch of -(2^63-1) once showed 0 coins on every peer, for good.
- The property: whatever sessions, totals, stamps and values a member signs, delivered in any
  order and any number of times, replicas end with the same state, at most one slot per writer
  and a few backers per byte, and the honest players' counts exact.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from games.definition import Merge, MergeRule, Region
from peer.core.sync import codec
from peer.core.sync import merge as rules
from peer.core.sync.replica import (
    Event,
    FullStateReceived,
    Rejected,
    Replica,
    full_state_cost,
)
from peer.core.sync.state import Layout, SharedState, SignedBatch
from tests.sim import ROOM, START, Mesh, key, open_stored

REGIONS = (
    Region(0xE000, 0xE001, Merge(MergeRule.ADD)),  # two 1-byte counters, 0-255
    Region(0xE008, 0xE008, Merge(MergeRule.ADD, 1, True)),  # BCD coins, 00-99
    Region(0xE010, 0xE013, Merge(MergeRule.BIT_OR)),
    Region(0xE014, 0xE015, Merge(MergeRule.MAX)),
    Region(0xE016, 0xE016, Merge(MergeRule.MIN)),
    Region(0xE017, 0xE017, Merge(MergeRule.BIT_AND)),
    Region(0xE020, 0xE023),
)
COUNTERS = [0xE000, 0xE001, 0xE008]
JOINED = [0xE010, 0xE014, 0xE016, 0xE017]
MEMBER = key(9)
MEMBER_KEY = MEMBER.verify_key.encode()


class Member:
    """A room member that signs whatever it likes with its own key, through the real codec."""

    def __init__(self) -> None:
        self.seq = 0

    def batch(
        self, session: int, lamport: int, *, totals: tuple[tuple[int, int], ...] = (), runs=()
    ) -> SignedBatch:
        return codec.sign_batch(MEMBER, room=ROOM, session=session, lamport=lamport, runs=runs, totals=totals)

    def message(self, signed: SignedBatch) -> bytes:
        self.seq += 1
        return codec.encode(
            codec.WriteBatch.of(signed), signing_key=MEMBER, room=ROOM, session=signed.session, seq=self.seq
        )


class Room(Mesh):
    """The mesh, with a member whose messages a test sends (what is sent to it is dropped)."""

    def collect(self) -> None:
        for source, replica in enumerate(self.replicas):
            for peer, data in replica.messages_to_send():
                if peer != MEMBER_KEY and frozenset((source, self.index_of(peer))) not in self.blocked:
                    self.in_flight.append((source, self.index_of(peer), data))


def room(size: int = 2) -> Room:
    replicas = [Replica(signing_key=key(n), room=ROOM, regions=REGIONS, session=n + 100) for n in range(size)]
    mesh = Room(replicas)
    for replica in replicas:
        for other in replicas:
            if other is not replica:
                replica.add_peer(other.key, START)
        replica.add_peer(MEMBER_KEY, START)
    mesh.collect()
    mesh.deliver_all()
    return mesh


def send(mesh: Mesh, target: int, data: bytes) -> list[Event]:
    events = mesh.replicas[target].receive(MEMBER_KEY, data, mesh.now, wall=mesh.wall)
    mesh.events += [(target, e) for e in events]
    mesh.collect()
    return events


def flood_sessions(mesh: Mesh, sessions: int) -> None:
    """The issue's flood: a new session per batch, each a total of 0 (nothing shown moves)."""
    member = Member()
    base = int(mesh.wall * 1000) - sessions
    for n in range(sessions):
        data = member.message(member.batch(1000 + n, base + n, totals=((0xE000, 0), (0xE008, 0))))
        for target in range(len(mesh.replicas)):
            send(mesh, target, data)
        if n % 200 == 199:
            mesh.advance(1.0)  # (within the member's message budget)
            mesh.deliver_all()


# ---- F3 ----------------------------------------------------------------------------------------


def test_a_member_flooding_sessions_leaves_one_slot_per_writer():
    mesh = room()
    for index, replica in enumerate(mesh.replicas):
        replica.local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE000, 3 + index)])
    mesh.collect()
    mesh.deliver_all()
    flood_sessions(mesh, 2000)
    for replica in mesh.replicas:
        assert len(replica.state.slots[0xE000]) == 3  # two players and the member: 2,000 slots before
        assert len(replica.state.slots[0xE008]) == 1
        assert len(replica.state.carried[0xE000]) <= 1  # (the member's previous session: carried)
        assert len(replica.state.batches) <= 4
        assert replica.state.counter_value(0xE000) == 7


def test_a_joiner_takes_the_full_state_after_a_session_flood():
    mesh = room()
    flood_sessions(mesh, 2000)
    joiner = Replica(signing_key=key(5), room=ROOM, regions=REGIONS, session=300)
    mesh.replicas.append(joiner)
    joiner.add_members([MEMBER_KEY])
    for other in mesh.replicas[:2]:
        other.add_peer(joiner.key, mesh.now)
        joiner.add_peer(other.key, mesh.now)
    mesh.collect()
    mesh.deliver_all()
    refused = [e for i, e in mesh.events if i == 2 and isinstance(e, Rejected)]
    assert refused == []  # (rate_limited, ~2,000 times per member before)
    assert sum(isinstance(e, FullStateReceived) for i, e in mesh.events if i == 2) == 2
    assert joiner.state.digest() == mesh.replicas[0].state.digest()


def test_a_losing_join_value_under_newer_stamps_keeps_a_few_backers():
    mesh = room(1)
    mesh.write(0, 0xE010, b"\x05")
    mesh.write(0, 0xE014, b"\x90")
    mesh.write(0, 0xE016, b"\x10")
    mesh.write(0, 0xE017, b"\xf0")
    member = Member()
    lamport = int(mesh.wall * 1000)
    for n in range(600):
        value = 1 << (n % 3)  # bits 0-2 of the bit-or byte, lower values for max, higher for min
        runs: tuple[tuple[int, bytes], ...] = (
            (0xE010, bytes([value])),
            (0xE014, bytes([value])),
            (0xE016, bytes([0x20 + n % 7])),
            (0xE017, bytes([0xF1 | value])),
        )
        send(mesh, 0, member.message(member.batch(7, lamport + n, runs=runs)))
        if n % 200 == 199:
            mesh.advance(1.0)
    state = mesh.replicas[0].state
    assert state.read(0xE010, 8) == b"\x07\x00\x00\x00\x90\x00\x10\xf0"
    # Each byte keeps the newest batch and those that give what the others lack (600 before):
    assert [len(state.batches_backing([address])) for address in JOINED] == [3, 2, 2, 2]
    assert len(state.batches) <= 8


def test_the_full_state_credit_is_capped():
    layout = Layout(
        [Region(0x8000, 0xBFFF, Merge(MergeRule.BIT_OR)), Region(0xC000, 0xC0FF, Merge(MergeRule.ADD))]
    )
    assert full_state_cost(layout, members=10**6) == full_state_cost(layout, members=1) == 20_000
    small = Layout(REGIONS)
    assert full_state_cost(small, members=3) < full_state_cost(small, members=3, held=5000) <= 20_000


def test_an_old_store_with_a_slot_per_session_loads_folded():
    """Before protocol 6 each session was a slot of its own: a stored state with 300 of them
    (two players, one member's flood) loads with one slot per writer; this peer folds its own
    sessions into one total at its first timer, so the counter shows what it showed."""
    layout = Layout(REGIONS)
    state = SharedState(layout)
    batches = [
        codec.sign_batch(key(0), room=ROOM, session=s, lamport=10 + s, runs=(), totals=((0xE000, 4),))
        for s in range(1, 4)
    ]
    batches += [
        codec.sign_batch(MEMBER, room=ROOM, session=s, lamport=100 + s, runs=(), totals=((0xE000, 0),))
        for s in range(300)
    ]
    blob = SharedState._LEGACY_MAGIC + layout.fingerprint + len(batches).to_bytes(4, "big")
    blob += b"".join(len(b.raw).to_bytes(4, "big") + b.raw for b in batches)
    state = SharedState.from_bytes(layout, blob, open_stored())
    assert len(state.slots[0xE000]) == 2 and len(state.batches) == 4  # (and each one's session before)
    assert state.counter_value(0xE000) == 12  # (what it showed before the upgrade)
    replica = Replica(signing_key=key(0), room=ROOM, regions=REGIONS, session=4, state=state)
    replica.handle_timer(START, wall=START)
    assert replica.state.counter_value(0xE000) == 12  # three sessions of 4
    replica.local_changes([], START, wall=START, deltas=[(0xE000, 1)])
    assert replica.state.counter_value(0xE000) == 13 and len(replica.state.slots[0xE000]) == 2


# ---- F4 ----------------------------------------------------------------------------------------


def test_one_batch_cannot_pin_a_counter():
    mesh = room()
    mesh.replicas[0].local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE008, 5)])
    mesh.collect()
    mesh.deliver_all()
    member, lamport = Member(), int(mesh.wall * 1000)
    pin = member.message(member.batch(1, lamport, totals=((0xE008, -(2**63 - 1)),)))
    for target in (0, 1):
        events = send(mesh, target, pin)
        assert [e.reason for e in events if isinstance(e, Rejected)] == ["total_out_of_range"]
        assert mesh.replicas[target].links[MEMBER_KEY].stats.rejections["total_out_of_range"] == 1
    assert [r.state.counter_value(0xE008) for r in mesh.replicas] == [5, 5]
    # A member's total is an offset of at most the modulus (400 here): spending the whole purse
    # (-99, published as 301), the pickups that follow carry the sum past it:
    spend = member.message(member.batch(1, lamport + 1, totals=((0xE008, 301),)))
    for target in (0, 1):
        send(mesh, target, spend)
    mesh.deliver_all()
    for _ in range(95):
        mesh.replicas[1].local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE008, 1)])
    mesh.collect()
    mesh.deliver_all()
    assert [r.state.counter_value(0xE008) for r in mesh.replicas] == [1, 1]  # 5 + 95 - 99


def test_a_player_never_publishes_a_total_out_of_range():
    mesh = room(1)
    replica = mesh.replicas[0]
    outcome = replica.local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE008, 150)])
    assert outcome.totals == ((0xE008, 150),) and replica.state.counter_value(0xE008) == 99
    outcome = replica.local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE008, -200)])
    assert outcome.totals == ((0xE008, 350),)  # (-50, modulo 400)
    assert replica.state.counter_value(0xE008) == 0


def test_one_player_picking_up_and_another_spending_keeps_every_coin():
    """The demo's coins (0-99): A picks up 40 and B spends 40, three times. A clamp of each
    player's own total to the range showed 19 where 40 was due, then 0, and A's next pickup
    came back to its game as -40."""
    mesh = room(2)
    a, b = mesh.replicas

    def step(replica: Replica, delta: int) -> tuple[tuple[int, int], ...]:
        outcome = replica.local_changes([], mesh.now, wall=mesh.wall, deltas=[(0xE008, delta)])
        mesh.collect()
        mesh.deliver_all()
        return outcome.deltas

    for _ in range(3):
        assert step(a, 40) == () and a.state.counter_value(0xE008) == 40
        assert step(b, -40) == () and b.state.counter_value(0xE008) == 0
    assert step(a, 40) == ()  # (a -40 correction before)
    assert [r.state.counter_value(0xE008) for r in mesh.replicas] == [40, 40]  # (0 before)
    assert step(b, -5) == () and [r.state.counter_value(0xE008) for r in mesh.replicas] == [35, 35]


# ---- the property --------------------------------------------------------------------------------

member_batch = st.tuples(
    st.integers(0, 2**64 - 1),  # session
    st.integers(1, 10_000),  # lamport
    st.sampled_from(COUNTERS),
    st.integers(-300, 1100),  # total: some out of the 1-byte (0..1023) and BCD (0..399) ranges
    st.sampled_from(JOINED),
    st.integers(0, 255),  # a value for a join byte
)


def member_batches(specs) -> list[SignedBatch]:
    return [
        codec.sign_batch(
            MEMBER,
            room=ROOM,
            session=session,
            lamport=lamport,
            runs=((address, bytes([value])),),
            totals=((first, total),),
        )
        for session, lamport, first, total, address, value in specs
    ]


def accepted(layout: Layout, batch: SignedBatch) -> bool:
    return all(0 <= t < 4 * (rules.top(layout.counters[f]) + 1) for f, t in batch.totals)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(member_batch, min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 1), st.sampled_from(COUNTERS), st.integers(-20, 20)), max_size=20),
    st.randoms(use_true_random=False),
)
def test_any_order_of_a_members_sessions_and_totals_converges_bounded(specs, honest, rnd):
    layout = Layout(REGIONS)
    batches = [b for b in member_batches(specs) if accepted(layout, b)]
    lamport, made = 20_000, {first: 0 for first in COUNTERS}
    totals: dict[tuple[int, int], int] = {}
    for writer, first, delta in honest:  # two honest writers, one session each
        lamport += 1
        totals[(writer, first)] = totals.get((writer, first), 0) + delta
        made[first] += delta
        batches.append(
            codec.sign_batch(
                key(writer),
                room=ROOM,
                session=writer,
                lamport=lamport,
                runs=(),
                totals=((first, totals[(writer, first)] % (4 * (rules.top(layout.counters[first]) + 1))),),
            )
        )
    states = []
    for _ in range(3):  # three replicas, each its own order, some batches twice
        order = batches + rnd.sample(batches, k=len(batches) // 2)
        rnd.shuffle(order)
        state = SharedState(layout)
        for batch in order:
            state.apply_batch(batch)
        states.append(state)
    assert len({s.digest() for s in states}) == 1
    member_total = {first: 0 for first in COUNTERS}
    newest: dict[int, tuple[int, int, int]] = {}
    for batch in batches:
        if batch.author == MEMBER_KEY:
            first, total = batch.totals[0]
            newest[first] = max(newest.get(first, (0, 0, 0)), (batch.session, batch.lamport, total))
    for first, (_, _, total) in newest.items():  # (its newest session's newest total counts)
        member_total[first] = total
    for state in states:
        assert len({id(b) for b in state.batches.values()}) <= 4 * len(COUNTERS) + 9 * 6 + 2 * 3
        for first in COUNTERS:
            assert len(state.slots[first]) <= 3
            top = rules.top(layout.counters[first])
            honest = [total for writer, (_, _, total) in state.slots[first].items() if writer != MEMBER_KEY]
            assert sum(honest) % (4 * (top + 1)) == made[first] % (4 * (top + 1))  # (each once)
            assert state.total(first, MEMBER_KEY) == member_total[first]
            if first not in newest and -top <= made[first] <= 3 * top:  # (the sum is exact there)
                assert state.counter_value(first) == min(max(made[first], 0), top)
        for address in JOINED:
            assert len(state.batches_backing([address])) <= (9 if address in (0xE010, 0xE017) else 2)


room_step = st.one_of(
    st.tuples(st.just("count"), st.integers(0, 2), st.sampled_from(COUNTERS), st.integers(-20, 20)),
    st.tuples(st.just("member"), st.integers(0, 2), member_batch),
    st.tuples(st.just("deliver"), st.integers(0, 1000)),
    st.tuples(st.just("tick"), st.floats(0.0, 4.0)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(room_step, max_size=50))
def test_a_member_picking_sessions_and_totals_cannot_split_or_grow_the_room(steps):
    """Three honest replicas counting while a member sends each whatever it signs (any session,
    any total, in range or not, any stamp): once healed they agree, every honest change is
    counted exactly once, and each counter holds one slot per writer."""
    mesh = room(3)
    member, made = Member(), {first: 0 for first in COUNTERS}
    for step in steps:
        match step:
            case ("count", index, first, delta):
                replica = mesh.replicas[index]
                replica.local_changes([], mesh.now, wall=mesh.wall, deltas=[(first, delta)])
                made[first] += delta
                mesh.collect()
            case ("member", target, (session, lamport, first, total, address, value)):
                stamp = int(mesh.wall * 1000) - 10_000 + lamport
                runs = ((address, bytes([value])),)
                send(
                    mesh,
                    target,
                    member.message(member.batch(session, stamp, totals=((first, total),), runs=runs)),
                )
            case ("deliver", position) if mesh.in_flight:
                mesh.deliver(position)
            case ("tick", seconds):
                mesh.advance(seconds)
    mesh.settle(rounds=6)
    assert mesh.converged()
    for replica in mesh.replicas:
        for first in COUNTERS:
            slots = replica.state.slots[first]
            assert len(slots) <= 4
            honest = sum(total for writer, (_, _, total) in slots.items() if writer != MEMBER_KEY)
            modulus = 4 * (rules.top(replica.state.layout.counters[first]) + 1)
            assert honest % modulus == made[first] % modulus  # (every change once, none lost)
            assert all(
                rules.in_range(total, replica.state.layout.counters[first]) for _, _, total in slots.values()
            )
        assert len(replica.state.batches) <= 4 * len(COUNTERS) + 4 + 9 * 2 + 2 * 3
