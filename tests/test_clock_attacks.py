"""Clocks cannot be used to split or freeze the room (issue 18, F1): replicas with skewed clocks
and a member that stamps at their bounds; every message goes through the real codec."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.core.sync import codec
from peer.core.sync.clock import CROSS_BYTE_MS, HOLD_MS, MAX_AHEAD_MS, wall_ms
from peer.core.sync.replica import HEARTBEAT_INTERVAL, BytesChanged, Event, Rejected, Replica
from tests.sim import REGIONS, ROOM, START, key, write_batch

HONEST = 3
ADVERSARY = key(9)
ADVERSARY_KEY = ADVERSARY.verify_key.encode()
OWN_ADDRESS = [0xE000 + i for i in range(HONEST)]  # each honest replica writes its own byte
ATTACKED = 0xE00F


class SkewedRoom:
    def __init__(self, skews_ms: list[int]) -> None:
        self.skews = [s / 1000 for s in skews_ms]
        self.now = START
        self.replicas = [
            Replica(signing_key=key(n), room=ROOM, regions=REGIONS, session=100 + n) for n in range(HONEST)
        ]
        for replica in self.replicas:
            for other in self.replicas:
                if other is not replica:
                    replica.add_peer(other.key, START)
            replica.add_peer(ADVERSARY_KEY, START)
        self.in_flight: list[tuple[int, bytes, bytes]] = []
        self.events: list[tuple[int, Event]] = []
        self.seq = 1
        self.collect()

    def wall(self, index: int) -> float:
        return self.now + self.skews[index]

    def collect(self) -> None:
        for replica in self.replicas:
            for peer, data in replica.messages_to_send():
                if peer != ADVERSARY_KEY:
                    self.in_flight.append((self._index(peer), replica.key, data))

    def _index(self, peer: bytes) -> int:
        return next(i for i, r in enumerate(self.replicas) if r.key == peer)

    def deliver_all(self) -> None:
        while self.in_flight:
            target, sender, data = self.in_flight.pop(0)
            events = self.replicas[target].receive(sender, data, self.now, wall=self.wall(target))
            self.events += [(target, e) for e in events]
            self.collect()

    def start(self) -> None:
        """Exchange full states and one heartbeat each way (every replica knows the others' skews)."""
        self.deliver_all()
        self.advance(0.0)
        self.deliver_all()

    def deliver(self, source: int, target: int) -> None:
        """Deliver only what SOURCE sent TARGET (the rest stays in flight)."""
        sender = self.replicas[source].key
        kept = []
        for entry in self.in_flight:
            if entry[0] == target and entry[1] == sender:
                events = self.replicas[target].receive(sender, entry[2], self.now, wall=self.wall(target))
                self.events += [(target, e) for e in events]
            else:
                kept.append(entry)
        self.in_flight = kept
        self.collect()

    def attack(self, target: int, excess_ms: int, address: int = ATTACKED) -> None:
        """The member stamps a write at the target's bound, plus `excess_ms`."""
        lamport = wall_ms(self.wall(target)) + MAX_AHEAD_MS + excess_ms
        body = write_batch(ADVERSARY, lamport, ((address, bytes([excess_ms % 256])),), session=999)
        data = codec.encode(body, signing_key=ADVERSARY, room=ROOM, session=999, seq=self.seq)
        self.seq += 1
        events = self.replicas[target].receive(ADVERSARY_KEY, data, self.now, wall=self.wall(target))
        self.events += [(target, e) for e in events]
        self.collect()

    def write(self, index: int, value: int, address: int | None = None) -> None:
        address = OWN_ADDRESS[index] if address is None else address
        self.replicas[index].local_changes([(address, bytes([value]))], self.now, wall=self.wall(index))
        self.collect()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for index, replica in enumerate(self.replicas):
            self.events += [(index, e) for e in replica.handle_timer(self.now, wall=self.wall(index))]
        self.collect()


step = st.one_of(
    st.tuples(
        st.just("attack"),
        st.integers(0, HONEST - 1),
        st.integers(-2000, MAX_AHEAD_MS + 5000),
        st.sampled_from([ATTACKED, *OWN_ADDRESS]),  # its own byte, or one an honest player writes
    ),
    st.tuples(st.just("write"), st.integers(0, HONEST - 1), st.integers(1, 255)),
    st.tuples(st.just("deliver")),
    st.tuples(st.just("tick"), st.floats(0.01, 2.0)),
)


@settings(max_examples=60, deadline=None)
@given(
    # Any two clocks up to the bound apart (issue 30, F7: the property covered 10 s before).
    st.lists(st.integers(-MAX_AHEAD_MS // 2, MAX_AHEAD_MS // 2), min_size=HONEST, max_size=HONEST),
    st.lists(step, max_size=40),
)
def test_honest_writes_always_get_through_whatever_a_member_stamps(skews_ms, steps):
    room = SkewedRoom(skews_ms)
    room.start()
    last: dict[int, int] = {}
    pinned: set[int] = set()
    for operation in steps:
        match operation:
            case ("attack", target, excess, address):
                room.attack(target, excess, address)
                pinned.add(address)
            case ("write", index, value):
                room.write(index, value)
                last[index] = value
            case ("deliver",):
                room.deliver_all()
            case ("tick", seconds):
                room.advance(seconds)
    room.deliver_all()
    for _ in range(2):  # what was held comes due, and digests bring every replica the same
        room.advance((MAX_AHEAD_MS + HOLD_MS) / 1000 + 1)
        room.deliver_all()
    # Every honest replica writes once more, now that the member's batches have reached it: each
    # write wins everywhere, on the bytes the member stamped too (review of issue 30, F7: a
    # member's batch held up to bound + 60 s rolled back every write made while it was held).
    for index in range(HONEST):
        room.write(index, 0xA0 + index)
        last[index] = 0xA0 + index
    room.deliver_all()
    room.advance((MAX_AHEAD_MS + HOLD_MS) / 1000 + 1)  # writes held by slower replicas come due
    room.deliver_all()
    refused = [
        e
        for _, e in room.events
        if isinstance(e, Rejected) and e.peer != ADVERSARY_KEY and e.reason != "digest_too_often"
    ]  # (digests sent over several ticks and delivered at once: the sim's bunching, not the clock)
    assert refused == []  # no honest message was refused, held at most
    for replica in room.replicas:
        for index, value in last.items():
            assert replica.state.read(OWN_ADDRESS[index]) == bytes([value])


def test_a_write_just_past_the_bound_is_held_until_the_clock_catches_up():
    room = SkewedRoom([0, 0, 0])
    room.start()
    room.attack(0, HOLD_MS // 2)  # just past the bound: held, neither refused nor merged yet
    assert room.replicas[0].state.read(ATTACKED) == b"\x00"
    assert not [e for _, e in room.events if isinstance(e, Rejected)]
    timer = room.replicas[0].get_timer()
    assert timer is not None and timer <= room.now + HOLD_MS / 2000 + 0.01
    room.advance(HOLD_MS / 2000 + 0.01)
    assert room.replicas[0].state.read(ATTACKED) == bytes([(HOLD_MS // 2) % 256])
    assert any(isinstance(e, BytesChanged) and e.peer == ADVERSARY_KEY for _, e in room.events)
    room.attack(1, HOLD_MS + 1)  # beyond what is held: refused, counted
    assert [e.reason for _, e in room.events if isinstance(e, Rejected)] == ["lamport_ahead"]


def test_stamps_far_above_the_senders_own_clock_count_against_it():
    """F1: a member learned a fast peer's clock and stamped at that peer's bound ~100 times a
    second; its heartbeats show its own clock, so stamps past its own bound are its fault."""
    room = SkewedRoom([0, 0, 0])
    room.deliver_all()
    victim = room.replicas[0]
    beat = codec.Heartbeat(wall_ms(room.wall(0)) - 20_000, 0, 0)  # its clock: 20 s slow
    victim.receive(
        ADVERSARY_KEY,
        codec.encode(beat, signing_key=ADVERSARY, room=ROOM, session=999, seq=500),
        room.now,
        wall=room.wall(0),
    )
    room.seq = 501
    room.advance(HEARTBEAT_INTERVAL)
    room.attack(0, -1)  # at the victim's bound: within it, but 20 s past the member's own
    reasons = [e.reason for _, e in room.events if isinstance(e, Rejected)]
    assert reasons == ["stamp_ahead_of_sender"]
    assert victim.state.read(ATTACKED) != b"\x00"  # still merged: every replica decides alike
    assert victim.statistics().peers[ADVERSARY_KEY].rejections["stamp_ahead_of_sender"] == 1


def pinned_skew_writes(address: int, writes: int = 80, skew_ms: int = 12_000) -> tuple[int, int, list[str]]:
    """Replica 0's clock runs 12 s fast; the member stamps a write at replica 0's bound every
    second (at `address`) while replica 0 writes its own byte every 0.1 s. Returns how many of
    those writes replica 1 had within 1 s, how many in the end, and what was refused."""
    room = SkewedRoom([skew_ms, 0, 0])
    room.start()
    prompt = 0
    for n in range(writes):
        if n % 10 == 0:
            room.attack(0, 0, address)
        room.write(0, n % 200 + 1)
        room.deliver_all()
        room.advance(0.1)
        room.deliver_all()
        prompt += room.replicas[1].state.read(OWN_ADDRESS[0]) == bytes([n % 200 + 1])
    room.advance((skew_ms + HOLD_MS) / 1000)
    room.deliver_all()
    final = room.replicas[1].state.read(OWN_ADDRESS[0]) == bytes([(writes - 1) % 200 + 1])
    refused = [e.reason for _, e in room.events if isinstance(e, Rejected) and e.peer != ADVERSARY_KEY]
    return prompt, int(final), refused


def test_a_member_pinning_the_fast_replicas_bound_delays_no_honest_write():
    """Issue 30, F7: with a 12 s skew and a member pinning the fast replica's bound, 0 of 80 of
    its writes got through (each one refused at the slow replica, and counted against the
    honest sender). Writes to bytes the member did not stamp are not lifted by its stamp."""
    prompt, final, refused = pinned_skew_writes(ATTACKED)
    assert refused == []
    assert prompt == 80 and final == 1


def test_writes_over_a_pinned_byte_are_late_by_the_skew_never_refused():
    """The member pins the very byte the fast replica writes: each write must beat the pin, so
    it is past the slow replica's bound by the skew; held that long, then merged, never refused."""
    _, final, refused = pinned_skew_writes(OWN_ADDRESS[0])
    assert refused == []
    assert final == 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(-CROSS_BYTE_MS // 2 + 1, CROSS_BYTE_MS // 2 - 1), min_size=HONEST, max_size=HONEST),
    st.permutations(range(HONEST)),
    st.floats(0.0, 0.5),
)
def test_a_write_beats_what_its_writer_saw_through_other_bytes(skews_ms, order, gap):
    """Causality across bytes (review of issue 30, F7): A writes X; B sees it and writes Y; C
    sees only Y, then writes X. C's write follows A's and must win everywhere, whatever the
    clocks, as long as they are less than `CROSS_BYTE_MS` apart. With the floor alone (stamped
    above only what it overwrites) A's X won when A's clock ran 1 s fast."""
    a, b, c = order
    room = SkewedRoom(skews_ms)
    room.deliver_all()
    x, y = OWN_ADDRESS[0], OWN_ADDRESS[1]
    room.write(a, 1, x)
    room.deliver(a, b)
    room.now += gap
    room.write(b, 2, y)
    room.deliver(b, c)
    room.now += gap
    room.write(c, 3, x)
    room.deliver_all()
    assert [r.state.read(x) for r in room.replicas] == [b"\x03"] * HONEST


def test_a_member_cannot_hold_a_write_back_to_roll_back_honest_ones():
    """Review of issue 30, F7: a write stamped wall + 119 s was held 59 s (a hold as long as the
    bound), then overwrote the 58 s of honest writes made meanwhile. A member whose heartbeats
    show no skew has `HOLD_MS` of hold, no more: such a stamp is refused and counted."""
    room = SkewedRoom([0, 0, 0])
    room.start()
    room.attack(1, 59_000, OWN_ADDRESS[0])  # its bound + 59 s
    assert [e.reason for _, e in room.events if isinstance(e, Rejected)] == ["lamport_ahead"]
    for second in range(1, 59):
        room.write(0, second)
        room.advance(1.0)
        room.deliver_all()
    room.advance(2.0)
    room.deliver_all()
    assert {r.state.read(OWN_ADDRESS[0]) for r in room.replicas} == {bytes([58])}


def test_a_player_whose_clock_runs_fast_has_its_writes_over_a_pinned_byte_held_never_refused():
    """What the hold is for: the skew an author's heartbeats show (here 30 s) is held for it."""
    _, final, refused = pinned_skew_writes(OWN_ADDRESS[0], skew_ms=30_000, writes=20)
    assert refused == []
    assert final == 1


def test_a_member_claiming_a_fast_clock_holds_back_no_more_than_its_claim():
    """What a member gains by lying in its heartbeats (a clock 10 s fast): its writes are held up
    to its claim plus `HOLD_MS`, as an honest fast player's would be, and refused beyond; every
    player is told its clock is off (`clock.CLOCK_WARN_S`)."""
    room = SkewedRoom([0, 0, 0])
    room.start()
    victim = room.replicas[0]
    beat = codec.Heartbeat(wall_ms(room.wall(0)) + 10_000, 0, 0)
    data = codec.encode(beat, signing_key=ADVERSARY, room=ROOM, session=999, seq=500)
    victim.receive(ADVERSARY_KEY, data, room.now, wall=room.wall(0))
    room.seq = 501
    room.attack(0, 10_000 + HOLD_MS + 1, OWN_ADDRESS[1])  # past its claim: refused
    room.attack(0, 10_000 + HOLD_MS // 2)  # within it: held that long, then merged
    assert [e.reason for _, e in room.events if isinstance(e, Rejected)] == ["lamport_ahead"]
    room.advance(10 + HOLD_MS / 2000 - 0.01)
    assert victim.state.read(ATTACKED) == b"\x00"
    room.advance(0.02)
    assert victim.state.read(ATTACKED) == bytes([(10_000 + HOLD_MS // 2) % 256])


ROLLBACK_S = 1.0  # the most a member whose heartbeats show no skew may hold a write back


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-MAX_AHEAD_MS // 2, MAX_AHEAD_MS // 2), min_size=HONEST, max_size=HONEST),
    st.integers(0, HONEST - 1),
    st.integers(-2000, MAX_AHEAD_MS + 5000),
    st.floats(ROLLBACK_S + 0.01, 70.0),
)
def test_an_honest_write_made_after_a_members_write_arrived_wins(skews_ms, target, excess, delay):
    """Review of issue 30, F7: a write the member stamped past the target's bound was held as
    long as the bound, then beat the writes the target made meanwhile. Whatever it stamps, a
    write the target makes more than `ROLLBACK_S` after the member's arrived wins everywhere."""
    room = SkewedRoom(skews_ms)
    room.start()
    room.attack(target, excess)
    room.advance(delay)
    room.deliver_all()
    room.write(target, 0x77, ATTACKED)
    room.deliver_all()
    for _ in range(2):  # writes held by slower replicas come due; digests bring the rest
        room.advance((MAX_AHEAD_MS + HOLD_MS) / 1000 + 1)
        room.deliver_all()
    assert [r.state.read(ATTACKED) for r in room.replicas] == [b"\x77"] * HONEST
    refused = [
        e
        for _, e in room.events
        if isinstance(e, Rejected) and e.peer != ADVERSARY_KEY and e.reason != "digest_too_often"
    ]
    assert refused == []
