"""The sync engine: convergence under any schedule, and every abuse rule, through the real codec."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from games.definition import Region
from peer.core.sync import codec
from peer.core.sync.clock import HOLD_MS, MAX_AHEAD_MS
from peer.core.sync.replica import (
    CUT_AFTER_REJECTIONS,
    FULL_STATE_BYTES_PER_SECOND,
    FULL_STATE_INTERVAL,
    HEARTBEAT_INTERVAL,
    RUNS_PER_TOKEN,
    SILENT_AFTER,
    BytesChanged,
    ChatReceived,
    CutPeer,
    FullStateReceived,
    PeerLeft,
    PeerSilent,
    Rejected,
    Repaired,
    Replica,
    RosterDiffers,
)
from peer.core.sync.state import NO_WRITER, Layout, SharedState
from tests.sim import REGIONS, ROOM, START, Mesh, key, open_stored, signed, write_batch

RATE_BURST_MESSAGES = 600  # the 480-message burst allowance plus 120 over it

ADDRESSES = Layout(REGIONS).addresses

operation = st.one_of(
    st.tuples(
        st.just("write"),
        st.integers(0, 7),
        st.sampled_from(ADDRESSES),
        st.binary(min_size=1, max_size=3),
    ),
    st.tuples(st.just("deliver"), st.integers(0, 1000)),
    st.tuples(st.just("drop"), st.integers(0, 1000)),
    st.tuples(st.just("duplicate"), st.integers(0, 1000)),
    st.tuples(st.just("partition"), st.integers(0, 7), st.integers(0, 7)),
    st.tuples(st.just("heal")),
    st.tuples(st.just("tick"), st.floats(0.001, 2.0)),
)


def run(mesh: Mesh, operations) -> None:
    size = len(mesh.replicas)
    for op in operations:
        match op:
            case ("write", who, address, data):
                fitting = data[: max(1, len(data))]
                if Layout(REGIONS).check_run(address, len(fitting)):
                    mesh.write(who % size, address, fitting)
                else:
                    mesh.write(who % size, address, fitting[:1])
            case ("deliver", n) if mesh.in_flight:
                mesh.deliver(n)
            case ("drop", n) if mesh.in_flight:
                mesh.in_flight.pop(n % len(mesh.in_flight))
            case ("duplicate", n) if mesh.in_flight:
                mesh.in_flight.append(mesh.in_flight[n % len(mesh.in_flight)])
            case ("partition", a, b) if a % size != b % size:
                mesh.blocked.add(frozenset((a % size, b % size)))
            case ("heal",):
                mesh.blocked.clear()
            case ("tick", seconds):
                mesh.advance(seconds)


@given(st.integers(2, 8), st.lists(operation, max_size=60))
def test_replicas_converge_under_any_schedule(size, operations):
    mesh = Mesh.create(size)
    run(mesh, operations)
    mesh.settle()
    assert mesh.converged()
    values = {bytes(replica.state.values) for replica in mesh.replicas}
    assert len(values) == 1
    # Digests sent over several ticks arrive together when the schedule bunches them: the extra
    # ones are dropped (`digest_too_often`), never a strike, so no honest peer is ever cut.
    harmless = ("duplicate", "digest_too_often")
    assert not any(isinstance(e, Rejected) and e.reason not in harmless for _, e in mesh.events), [
        e for _, e in mesh.events if isinstance(e, Rejected)
    ]
    assert not any(isinstance(e, CutPeer) for _, e in mesh.events)


@given(st.integers(2, 5), st.lists(operation, max_size=40), st.sampled_from(ADDRESSES), st.integers(0, 255))
def test_a_local_write_beats_everything_its_writer_had_seen(size, operations, address, value):
    """On every byte, not only the one it writes (causality across bytes), while stamps are
    within `clock.CROSS_BYTE_MS` of the wall time (clocks that agree; a member's stamp far
    ahead on other bytes does not lift it, see `clock`)."""
    mesh = Mesh.create(size)
    run(mesh, operations)
    writer = mesh.replicas[0]
    current = writer.state.read(address)[0]
    value = value if value != current else (value + 1) % 256
    index = writer.state.layout.index(address)
    highest_seen = writer.statistics().max_lamport
    mesh.write(0, address, bytes([value]))
    assert writer.state.lamports[index] > highest_seen
    mine = (writer.state.lamports[index], writer.key)
    mesh.settle()
    # After settling, everyone holds this write, unless a concurrent write stamped higher won.
    for replica in mesh.replicas:
        final = (replica.state.lamports[index], replica.state.writers[index])
        assert final >= mine
        assert final != mine or replica.state.read(address)[0] == value


def test_a_write_reaches_every_peer_as_a_change_event():
    mesh = Mesh.create(3)
    mesh.write(1, 0xE003, b"\x2a\x2b")
    mesh.deliver_all()
    for index in (0, 2):
        changes = mesh.changes_seen_by(index)
        assert changes[-1].changes == ((0xE003, b"\x2a\x2b"),)
        assert changes[-1].peer == mesh.replicas[1].key
    assert mesh.replicas[1].statistics().peers[mesh.replicas[0].key].shared_bytes_sent == 2


def test_unchanged_local_values_send_nothing():
    mesh = Mesh.create(2)
    assert len(mesh.replicas[0].unwritten_addresses()) == 20
    mesh.write(0, 0xE000, b"\x01")
    assert 0xE000 not in mesh.replicas[0].unwritten_addresses()
    mesh.deliver_all()
    before = mesh.replicas[0].statistics().local_batches
    assert not mesh.replicas[0].local_changes([(0xE000, b"\x01")], mesh.now, wall=mesh.wall)
    assert mesh.replicas[0].statistics().local_batches == before


def test_a_zero_nobody_has_written_yet_is_still_published():
    mesh = Mesh.create(2)
    mesh.replicas[1].state.apply(0xE004, b"\x03", 5, mesh.replicas[1].key)  # only B knows a 3
    published = mesh.replicas[0].local_changes([(0xE004, b"\x00")], mesh.now, wall=mesh.wall)
    assert published.runs == ((0xE004, b"\x00"),)
    mesh.collect()
    mesh.deliver_all()
    assert mesh.replicas[1].state.read(0xE004) == b"\x00"


def test_late_joiner_adopts_the_room_and_wipes_nobody():
    mesh = Mesh.create(2)
    mesh.write(0, 0xE000, b"\x07\x08")
    mesh.deliver_all()
    newcomer = Replica(signing_key=key(5), room=ROOM, regions=REGIONS, session=9)
    mesh.replicas.append(newcomer)
    for old in mesh.replicas[:2]:
        old.add_peer(newcomer.key, mesh.now)
        newcomer.add_peer(old.key, mesh.now)
    mesh.collect()
    mesh.deliver_all()
    assert newcomer.state.read(0xE000, 2) == b"\x07\x08"
    assert mesh.replicas[0].state.read(0xE000, 2) == b"\x07\x08"
    assert (2, FullStateReceived(mesh.replicas[0].key)) in mesh.events
    assert mesh.converged()


def test_returning_peer_with_old_durable_state_is_accepted_and_merged():
    mesh = Mesh.create(2)
    mesh.write(0, 0xE001, b"\x11")
    mesh.deliver_all()
    stored = mesh.replicas[1].state.to_bytes()
    mesh.advance(3600.0)  # an hour of play without the second player
    mesh.write(0, 0xE002, b"\x22")
    mesh.deliver_all()
    old = SharedState.from_bytes(Layout(REGIONS), stored, open_stored())
    back = Replica(signing_key=key(1), room=ROOM, regions=REGIONS, session=999, state=old)
    mesh.replicas[1] = back
    back.add_peer(mesh.replicas[0].key, mesh.now)
    mesh.replicas[0].add_peer(back.key, mesh.now)
    mesh.collect()
    mesh.deliver_all()
    assert back.state.read(0xE001, 2) == b"\x11\x22"
    assert mesh.converged()
    assert sum(mesh.replicas[0].rejections.values()) == 0


def _two():
    mesh = Mesh.create(2)
    mesh.deliver_all()
    return mesh, mesh.replicas[0], mesh.replicas[1]


def _from(sender_key, body, seq, session=101, room=ROOM):
    return codec.encode(body, signing_key=sender_key, room=room, session=session, seq=seq)


def test_writes_outside_the_regions_are_refused_whole():
    mesh, a, b = _two()
    before = a.state.digest()
    bad = write_batch(key(1), int(mesh.now * 1000), ((0xE000, b"\x01"), (0xE010, b"\x02")))
    events = a.receive(b.key, _from(key(1), bad, seq=50), mesh.now, wall=mesh.wall)
    assert events == [Rejected(b.key, "outside_regions", "1 bytes at 0xe010")]
    assert a.state.digest() == before
    assert a.statistics().peers[b.key].rejections["outside_regions"] == 1


def test_far_future_lamport_is_refused_the_same_on_every_replica():
    mesh = Mesh.create(3)
    mesh.deliver_all()
    ahead = int(mesh.now * 1000) + MAX_AHEAD_MS + HOLD_MS + 1
    for target in (0, 2):
        message = _from(key(1), write_batch(key(1), ahead, ((0xE000, b"\x09"),)), seq=70 + target)
        events = mesh.replicas[target].receive(mesh.replicas[1].key, message, mesh.now, wall=mesh.wall)
        assert [e.reason for e in events if isinstance(e, Rejected)] == ["lamport_ahead"]
        assert mesh.replicas[target].state.read(0xE000) == b"\x00"
    patch = codec.StatePatch(False, 0, 1, (signed(key(1), ahead, ((0xE000, b"\x09"),)).raw,))
    message = _from(key(1), patch, seq=90)
    events = mesh.replicas[0].receive(mesh.replicas[1].key, message, mesh.now, wall=mesh.wall)
    assert [e.reason for e in events if isinstance(e, Rejected)] == ["lamport_ahead"]


def test_duplicates_are_dropped_and_equivocation_is_a_forgery():
    mesh, a, b = _two()
    lamport = int(mesh.now * 1000) + 5
    first = _from(key(1), write_batch(key(1), lamport, ((0xE000, b"\x01"),)), seq=40)
    assert isinstance(a.receive(b.key, first, mesh.now, wall=mesh.wall)[0], BytesChanged)
    assert a.receive(b.key, first, mesh.now, wall=mesh.wall) == []
    assert a.statistics().peers[b.key].rejections["duplicate"] == 1
    other = _from(key(1), write_batch(key(1), lamport, ((0xE000, b"\x02"),)), seq=40)
    events = a.receive(b.key, other, mesh.now, wall=mesh.wall)
    assert [e.reason for e in events if isinstance(e, Rejected)] == ["forgery"]
    assert a.state.read(0xE000) == b"\x01"


def test_forged_signature_and_unknown_or_unadmitted_senders_are_refused():
    mesh, a, b = _two()
    batch = write_batch(key(1), int(mesh.now * 1000), ((0xE000, b"\x01"),))
    impostor = _from(key(6), batch, seq=60)
    assert [e.reason for e in a.receive(b.key, impostor, mesh.now, wall=mesh.wall)] == ["unknown_sender"]
    stranger = key(6).verify_key.encode()
    assert [e.reason for e in a.receive(stranger, impostor, mesh.now, wall=mesh.wall)] == ["not_admitted"]
    tampered = bytearray(_from(key(1), batch, seq=61))
    tampered[-70] ^= 1
    events = a.receive(b.key, bytes(tampered), mesh.now, wall=mesh.wall)
    assert [e.reason for e in events] == ["bad_signature"]
    other_room = _from(key(1), batch, seq=62, room="elsewhere")
    assert [e.reason for e in a.receive(b.key, other_room, mesh.now, wall=mesh.wall)] == ["bad_signature"]
    assert a.state.read(0xE000) == b"\x00"


def test_a_gap_in_sequence_numbers_asks_for_full_state():
    mesh, a, b = _two()
    mesh.write(1, 0xE000, b"\x01")
    mesh.in_flight.clear()  # lost
    mesh.write(1, 0xE001, b"\x02")
    mesh.deliver_all()
    assert a.state.read(0xE000, 2) == b"\x01\x02"
    assert a.statistics().peers[b.key].resyncs_requested == 1


def test_divergence_is_repaired_by_the_digest_check():
    mesh, a, b = _two()
    # Same Lamport, different bytes: the highest values match, only the digest tells.
    a.state.apply_batch(signed(key(0), 10, ((0xE005, b"\x05"),), session=100))
    b.state.apply_batch(signed(key(0), 10, ((0xE006, b"\x06"),), session=100))
    mesh.advance(3.0)
    mesh.deliver_all()
    assert mesh.converged()
    assert any(isinstance(e, Repaired) for _, e in mesh.events)
    assert a.statistics().peers[b.key].repairs + b.statistics().peers[a.key].repairs >= 1


def test_flooding_is_rate_limited_then_cut_before_verification():
    mesh, a, b = _two()
    junk = b"\x00" * 200  # not even a message: must not cost a signature check
    events = []
    for _ in range(2000):
        events += a.receive(b.key, junk, mesh.now, wall=mesh.wall)
    reasons = {e.reason for e in events if isinstance(e, Rejected)}
    assert reasons == {"version", "rate_limited"}
    assert len([e for e in events if isinstance(e, CutPeer)]) == 1  # every refusal is a strike
    assert a.statistics().peers[b.key].rejections["rate_limited"] >= CUT_AFTER_REJECTIONS


def test_heartbeats_measure_rtt_and_silence_is_reported():
    mesh, a, b = _two()
    for _ in range(3):
        mesh.advance(1.0)
        mesh.now += 0.010  # deliveries take 10 ms
        mesh.deliver_all()
    rtt = a.statistics().peers[b.key].rtt
    assert rtt is not None and 0.0 <= rtt <= 0.05
    mesh.blocked.add(frozenset((0, 1)))
    mesh.in_flight.clear()
    mesh.advance(SILENT_AFTER)
    assert (0, PeerSilent(b.key)) in mesh.events
    assert a.get_timer() is not None


def test_a_wall_clock_step_of_an_hour_either_way_keeps_every_link_up():
    """Timers run on the monotonic clock: stepping the wall clock (NTP, a laptop waking up) by
    an hour mid-session neither freezes the heartbeats (-1 h) nor silences the links (+1 h).
    (Back first: see the mesh test of the same name.)"""
    mesh = Mesh.create(3)
    mesh.deliver_all()
    for step in (-3600.0, 7200.0):
        mesh.wall_offset += step
        for n in range(3 * int(SILENT_AFTER)):
            mesh.advance(1.0)
            mesh.deliver_all()
            mesh.write(n % 3, ADDRESSES[n % len(ADDRESSES)], bytes([n]))
            mesh.deliver_all()
    assert not [e for _, e in mesh.events if isinstance(e, PeerSilent | Rejected)]
    assert mesh.converged()
    rtts = [s.rtt for r in mesh.replicas for s in r.statistics().peers.values()]
    assert all(rtt is not None and 0.0 <= rtt < 0.01 for rtt in rtts), rtts
    skews = [s.skew for r in mesh.replicas for s in r.statistics().peers.values()]
    assert all(skew is not None and abs(skew) < 1.0 for skew in skews), skews


def test_chat_and_goodbye():
    mesh, a, b = _two()
    b.send_chat("hello there", mesh.now)
    b.say_goodbye("quit", mesh.now)
    mesh.collect()
    mesh.deliver_all()
    assert (0, ChatReceived(b.key, "hello there")) in mesh.events
    assert (0, PeerLeft(b.key, "quit")) in mesh.events
    assert not a.is_connected(b.key)


def test_paused_peer_gets_coalesced_newest_values_on_resume():
    mesh, a, b = _two()
    a.pause_peer(b.key)
    for value in range(1, 20):
        mesh.write(0, 0xE000, bytes([value]))
    writes_in_flight = [m for m in mesh.in_flight if m[0] == 0]
    assert writes_in_flight == []
    a.resume_peer(b.key, mesh.now)
    mesh.collect()
    assert len(mesh.in_flight) == 1
    mesh.deliver_all()
    assert b.state.read(0xE000) == bytes([19])
    assert mesh.changes_seen_by(1)[-1].changes == ((0xE000, bytes([19])),)


def test_full_state_of_a_large_region_is_split_into_messages_that_fit():
    from games.definition import Region

    big = (Region(0x8000, 0xBFFF),)  # 16 KiB, every byte a different stamp in the worst case
    mesh = Mesh.create(2, regions=big)
    for address in range(0x8000, 0x8000 + 4000, 2):
        mesh.replicas[0].state.apply_batch(signed(key(0), 5 + address, ((address, b"\x01"),), session=100))
    mesh.replicas[0].add_peer(mesh.replicas[1].key, mesh.now)
    mesh.collect()
    sizes = [len(data) for _, _, data in mesh.in_flight]
    assert max(sizes) <= codec.MAX_MESSAGE_SIZE
    assert len(sizes) > 2
    mesh.deliver_all()
    assert mesh.converged()


def test_a_replica_does_not_peer_with_itself():
    replica = Replica(signing_key=key(0), room=ROOM, regions=REGIONS, session=1)
    try:
        replica.add_peer(replica.key, START)
    except ValueError:
        return
    raise AssertionError("adding itself must fail")


def test_sustained_flooding_a_few_times_over_the_rate_is_cut():
    """Refilled tokens must not hide a flood: strikes leak slowly, so a steady excess adds up."""
    mesh, a, b = _two()
    junk = b"\x00" * 200
    cut_at = None
    for n in range(6000):  # 1,000 messages per second for 6 s: four times the budget
        now = mesh.now + n / 1000
        if any(isinstance(e, CutPeer) for e in a.receive(b.key, junk, now, wall=now)):
            cut_at = n / 1000
            break
    assert cut_at is not None and cut_at < 4.0


def test_a_short_burst_is_throttled_but_not_cut():
    mesh, a, b = _two()
    events = []
    for n in range(RATE_BURST_MESSAGES):
        beat = _from(key(1), codec.Heartbeat(int(mesh.wall * 1000), 0, 0), seq=100 + n)
        events += a.receive(b.key, beat, mesh.now + n / 10_000, wall=mesh.wall)
    assert any(isinstance(e, Rejected) and e.reason == "rate_limited" for e in events)
    assert not any(isinstance(e, CutPeer) for e in events)


def test_a_batch_past_the_clock_bound_is_refused_alone_not_the_whole_patch():
    """F1: a member mixes a far-future batch of its own into a patch with A's honest write; the
    receiver refuses the one batch (counted against the member) and merges A's."""
    mesh = Mesh.create(3)
    mesh.deliver_all()
    mesh.write(0, 0xE000, b"\x05")
    mesh.deliver_all()
    (honest,) = mesh.replicas[2].state.batches_backing([0xE000])
    receiver = Replica(signing_key=key(7), room=ROOM, regions=REGIONS, session=900)
    member = mesh.replicas[2]
    receiver.add_members([mesh.replicas[0].key])
    receiver.add_peer(member.key, mesh.now)
    ahead = signed(
        key(2), int(mesh.now * 1000) + MAX_AHEAD_MS + HOLD_MS + 20, ((0xE001, b"\x66"),), session=102
    )
    patch = codec.StatePatch(True, 0, 1, (ahead.raw, honest.raw))
    events = receiver.receive(member.key, _from(key(2), patch, seq=5, session=102), mesh.now, wall=mesh.wall)
    assert [e.reason for e in events if isinstance(e, Rejected)] == ["lamport_ahead"]
    assert receiver.state.read(0xE000, 2) == b"\x05\x00"
    assert receiver.statistics().peers[member.key].rejections["lamport_ahead"] == 1


BIG = (Region(0x8000, 0xBFFF),)  # 16 KiB shared


def _big_pair():
    a = Replica(signing_key=key(0), room=ROOM, regions=BIG, session=100)
    a.add_peer(key(1).verify_key.encode(), START)
    return a, key(1).verify_key.encode()


def test_heavy_batches_are_charged_by_their_size_not_one_token_each():
    """F2: 40 valid 16 KiB batches in one second were 40 tokens of a 240/s budget; now each costs
    its bytes, so a member gets a couple of them through per second, not 40."""
    a, member = _big_pair()
    accepted = 0
    for n in range(40):
        now = START + n / 40
        batch = write_batch(key(1), int(now * 1000), ((0x8000, bytes([n]) * 16 * 1024),))
        events = a.receive(member, _from(key(1), batch, seq=n + 1), now, wall=now)
        accepted += any(isinstance(e, BytesChanged) for e in events)
    assert accepted <= 24, accepted  # the burst and one second of refill, at ~33 tokens each
    assert a.statistics().peers[member].rejections["rate_limited"] >= 15


def test_many_runs_cost_more_than_one_run_of_the_same_bytes():
    a, member = _big_pair()
    runs = tuple((0x8000 + 2 * i, b"\x01") for i in range(4000))  # 4,000 one-byte runs
    batch = write_batch(key(1), int(START * 1000), runs)
    before = a.links[member].tokens
    a.receive(member, _from(key(1), batch, seq=1), START, wall=START)
    assert before - a.links[member].tokens >= 4000 / RUNS_PER_TOKEN


def test_every_refusal_counts_toward_cutting_the_peer():
    """F2: refused messages within the rate budget (bad signatures here) used to cost nothing."""
    mesh, a, b = _two()
    batch = write_batch(key(1), int(mesh.now * 1000), ((0xE000, b"\x01"),))
    events = []
    for n in range(300):
        tampered = bytearray(_from(key(1), batch, seq=100 + n))
        tampered[-70] ^= 1
        events += a.receive(b.key, bytes(tampered), mesh.now + n / 300, wall=mesh.wall)
    assert "rate_limited" not in {e.reason for e in events if isinstance(e, Rejected)}
    assert len([e for e in events if isinstance(e, CutPeer)]) == 1


def test_chat_has_its_own_small_budget_and_a_chat_flood_is_cut():
    """F3: 200 chats a second went through whole and were never cut."""
    mesh, a, b = _two()
    events = []
    for n in range(400):  # 200 a second for 2 s
        chat = _from(key(1), codec.Chat(f"spam {n}"), seq=100 + n)
        events += a.receive(b.key, chat, mesh.now + n / 200, wall=mesh.wall)
    shown = [e for e in events if isinstance(e, ChatReceived)]
    assert 5 <= len(shown) <= 5 + 2 * 2 + 1
    assert len([e for e in events if isinstance(e, CutPeer)]) == 1


def _full_parts_sent(replica, peer):
    out = replica.messages_to_send()
    bodies = [codec.decode(data, room=ROOM, keys=(replica.key,)).body for to, data in out if to == peer]
    return [b for b in bodies if isinstance(b, codec.StatePatch) and b.full]


def test_resync_requests_are_merged_into_one_full_state_per_interval():
    """F5: every request got its own full state (37x amplification in the issue)."""
    mesh, a, b = _two()
    mesh.write(0, 0xE000, b"\x05")
    mesh.deliver_all()
    a.messages_to_send()
    for n in range(50):  # 50 requests in one second
        a.receive(b.key, _from(key(1), codec.ResyncRequest(), seq=100 + n), mesh.now + n / 50, wall=mesh.wall)
    assert len(_full_parts_sent(a, b.key)) == 1
    later = mesh.now + FULL_STATE_INTERVAL
    assert a.get_timer() is not None and a.get_timer() <= later
    a.handle_timer(later, wall=mesh.wall + FULL_STATE_INTERVAL)
    assert len(_full_parts_sent(a, b.key)) == 1  # the merged ones, once
    a.handle_timer(later + FULL_STATE_INTERVAL, wall=mesh.wall + 2 * FULL_STATE_INTERVAL)
    assert _full_parts_sent(a, b.key) == []  # nothing more was asked


def test_a_paused_link_gets_the_full_state_it_asked_for_only_on_resume():
    mesh, a, b = _two()
    a.messages_to_send()
    later = mesh.now + FULL_STATE_INTERVAL
    a.pause_peer(b.key)
    a.receive(b.key, _from(key(1), codec.ResyncRequest(), seq=100), later, wall=mesh.wall)
    a.handle_timer(later + 1, wall=mesh.wall)
    assert _full_parts_sent(a, b.key) == []
    a.resume_peer(b.key, later + 2)
    assert len(_full_parts_sent(a, b.key)) == 1


def test_heartbeats_say_when_two_peers_were_given_different_rosters():
    """Issue 18: a rendezvous giving members different rosters split the room without a word."""
    mesh, a, b = _two()
    a.set_roster([a.key, b.key])
    b.set_roster([a.key, b.key, key(6).verify_key.encode()])  # a member A was never told about
    for _ in range(5):
        mesh.advance(HEARTBEAT_INTERVAL)
        mesh.deliver_all()
    assert (0, RosterDiffers(b.key)) in mesh.events and (1, RosterDiffers(a.key)) in mesh.events
    b.set_roster([a.key, b.key])
    mesh.advance(HEARTBEAT_INTERVAL)
    mesh.deliver_all()
    assert (0, RosterDiffers(b.key, agree=True)) in mesh.events


def test_an_empty_full_state_from_a_new_member_is_not_the_rooms_state():
    """Issue 18: a joiner armed on a brand-new member's empty one-part full state."""
    mesh = Mesh.create(2)  # A (0) and B (1) have played
    mesh.write(0, 0xE000, b"\x07")
    mesh.deliver_all()
    member = Replica(signing_key=key(4), room=ROOM, regions=REGIONS, session=44)
    joiner = Replica(signing_key=key(5), room=ROOM, regions=REGIONS, session=55)
    joiner.set_roster([r.key for r in (*mesh.replicas, member, joiner)])
    member.add_peer(joiner.key, mesh.now)
    joiner.add_peer(member.key, mesh.now)
    (part,) = [data for to, data in member.messages_to_send() if to == joiner.key]
    events = joiner.receive(member.key, part, mesh.now, wall=mesh.wall)
    assert FullStateReceived(member.key, room_state=False) in events
    old = mesh.replicas[0]
    old.add_peer(joiner.key, mesh.now)
    joiner.add_peer(old.key, mesh.now)
    events = []
    for to, data in old.messages_to_send():
        if to == joiner.key:
            events += joiner.receive(old.key, data, mesh.now, wall=mesh.wall)
    assert FullStateReceived(old.key, room_state=True) in events
    assert joiner.state.read(0xE000) == b"\x07"


HUGE = (Region(0x8000, 0xFFFF),)  # 32 KiB shared: a game larger than the demo or Galious


def test_a_batch_no_state_patch_could_carry_is_refused_not_merged():
    """Issue 30, F2: one valid batch of 13,069 one-byte runs (65,535 bytes signed) was merged; no
    patch could pass it on, so every full state, repair and catch-up raised from then on."""
    a = Replica(signing_key=key(0), room=ROOM, regions=HUGE, session=100)
    member = key(1).verify_key.encode()
    a.add_peer(member, START)
    runs = tuple((0x8000 + 2 * i, b"\x01") for i in range(13_069))
    poison = write_batch(key(1), int(START * 1000), runs)
    assert len(signed(key(1), int(START * 1000), runs).raw) > codec.MAX_BATCH_SIZE
    events = a.receive(member, _from(key(1), poison, seq=1), START, wall=START)
    assert not any(isinstance(e, BytesChanged) for e in events)
    assert a.statistics().peers[member].rejections["batch_too_large"] == 1
    assert all(w == NO_WRITER for w in a.state.writers)


def test_every_local_batch_fits_in_a_state_patch_however_many_runs():
    a = Replica(signing_key=key(0), room=ROOM, regions=HUGE, session=100)
    runs = [(0x8000 + 2 * i, b"\x01") for i in range(16_000)]
    a.local_changes(runs, START, wall=START)
    assert a.state.batches and all(len(b.raw) <= codec.MAX_BATCH_SIZE for b in a.state.batches.values())
    other = Replica(signing_key=key(1), room=ROOM, regions=HUGE, session=101)
    a.add_peer(other.key, START)
    other.add_peer(a.key, START)
    a.request_resync(START)
    for _, message in a.messages_to_send():
        other.receive(a.key, message, START, wall=START)
    for _, message in other.messages_to_send():  # other asks, a answers with full state
        a.receive(other.key, message, START + 0.1, wall=START + 0.1)
    assert all(len(message) <= codec.MAX_MESSAGE_SIZE for _, message in a.messages_to_send())


def test_a_digest_flood_claiming_nothing_pulls_no_more_than_the_full_state_allowance():
    """Issue 30, F1: digests claiming `max_lamport=0` got the whole state every time (20 digests
    in 6 s pulled 41 MB from a 16 KiB state). Now a digest asks for state with a full state's
    limits, and more than one per half digest interval is refused."""
    a, member = _big_pair()
    for n in range(128):  # a 16 KiB state written in 128 batches
        a.local_changes([(0x8000 + 128 * n, bytes([n + 1]) * 128)], START, wall=START)
    a.messages_to_send()
    sent = 0
    for n in range(20):  # every 0.3 s for 6 s
        now = START + 0.3 * n
        a.receive(member, _from(key(1), codec.Digest(bytes(32), 0), seq=n + 1), now, wall=now)
        a.handle_timer(now, wall=now)
        sent += sum(len(message) for _, message in a.messages_to_send())
    full_state = sum(len(b.raw) for b in a.state.signed_batches())
    assert sent <= 2 * full_state + 6 * FULL_STATE_BYTES_PER_SECOND, (sent, full_state)
    assert a.statistics().peers[member].rejections["digest_too_often"] >= 9
