"""Publish gating (peer.core.emulator.gating): unit tests, and a property over the in-memory mesh of real
replicas (tests/sim.py) with a booting peer whose emulator is a dict."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from games.definition import ArmedClause, ArmedWhen, Comparison
from peer.core.emulator.gating import (
    Action,
    AdoptRoom,
    Check,
    Gate,
    Publish,
    Tell,
    WriteToEmulator,
    room_bytes,
    unwritten_values,
)
from peer.core.sync.replica import BytesChanged, Replica
from peer.core.sync.state import NO_WRITER, Layout
from tests.sim import REGIONS, Mesh

IN_PLAY = 0xE200  # private: watched for arming, never shared
IN_GAME = ArmedWhen((ArmedClause(IN_PLAY, Comparison.EQ, 1),))
LAYOUT = Layout(REGIONS)


def armed_gate() -> Gate:
    gate = Gate(LAYOUT, IN_GAME, None)
    gate.room_is_ready()
    assert gate.report([(IN_PLAY, b"\x01")], 6.0, 100.0, 1) == [Check()]
    assert gate.probed({IN_PLAY: 1}, 6.1, 1) == [AdoptRoom("armed")]
    assert gate.adopted("armed", [], 0) == [Tell("sharing with the room")]
    return gate


def test_nothing_is_published_before_the_check_that_armed() -> None:
    gate = Gate(LAYOUT, IN_GAME, None)
    gate.room_is_ready()
    assert gate.report([(0xE000, b"\x00\x00")], 5.0, 100.0, 1) == []  # the boot's clear
    assert gate.report([(IN_PLAY, b"\x01"), (0xE001, b"\x07")], 6.0, 100.1, 2) == [Check()]
    assert gate.remote_changes([(0xE000, b"\x09")]) == []  # disarmed: adoption brings it later
    assert gate.probed({IN_PLAY: 1}, 6.1, 2) == [AdoptRoom("armed")]
    assert gate.report([(0xE002, b"\x05")], 6.2, 100.2, 3) == []  # adopting: dropped
    assert gate.adopted("armed", [(0xE003, b"\x04")], 2) == [
        Publish(((0xE003, b"\x04"),)),
        Tell("sharing with the room; you got the room's items"),
    ]
    assert gate.report([(0xE002, b"\x06"), (0xE300, b"\x01")], 6.3, 100.3, 4) == [
        Publish(((0xE002, b"\x06"),), 100.3)  # only shared bytes; stamped when the game wrote
    ]
    assert gate.remote_changes([(0xE000, b"\x09")]) == [WriteToEmulator(((0xE000, b"\x09"),))]


def test_a_manual_resync_holds_the_games_changes_and_gives_them_back_newer() -> None:
    gate = armed_gate()
    assert gate.resync() == [AdoptRoom("manual resync")]
    assert gate.report([(0xE004, b"\x0a")], 7.0, 101.0, 2) == []
    runs = ((0xE004, b"\x0a"),)
    assert gate.adopted("manual resync", [], 3) == [
        WriteToEmulator(runs),
        Publish(runs),
        Tell("resynced: you have the room's items"),
    ]


def test_a_jump_in_time_publishes_nothing_and_puts_the_rooms_bytes_back() -> None:
    gate = armed_gate()
    old = [(0xE004, b"\x00"), (0xE018, b"\x00")]  # a loadstate: the item and counter of back then
    assert gate.report(old, 3.0, 101.0, 2, [(0xE004, b"\x01"), (0xE018, b"\x05")], jumped=True) == [
        AdoptRoom("jumped in time")
    ]
    assert gate.report([(0xE005, b"\x02")], 3.1, 101.1, 3) == []  # the game plays on: held
    runs = ((0xE005, b"\x02"),)
    assert gate.adopted("jumped in time", [], 9) == [
        WriteToEmulator(runs),
        Publish(runs),
        Tell("you loaded a state; kept the room's items"),
    ]
    assert gate.report([(0xE006, b"\x03")], 3.2, 101.2, 4) == [Publish(((0xE006, b"\x03"),), 101.2)]


def test_a_jump_to_the_title_screen_disarms_and_one_before_arming_is_left_to_arming() -> None:
    gate = armed_gate()
    assert gate.report([(IN_PLAY, b"\x00"), (0xE004, b"\x00")], 1.0, 101.0, 2, jumped=True) == [
        Tell("paused sharing: the game is not in play")
    ]
    booting = Gate(LAYOUT, IN_GAME, None)
    booting.room_is_ready()
    assert booting.report([(0xE004, b"\x00")], 1.0, 100.0, 1, jumped=True) == []


def test_leaving_play_disarms_and_drops_what_was_held() -> None:
    gate = armed_gate()
    gate.resync()
    gate.report([(0xE004, b"\x0a")], 7.0, 101.0, 2)
    disarmed = gate.report([(IN_PLAY, b"\x00")], 7.1, 101.1, 3)
    assert disarmed == [Tell("paused sharing: the game is not in play")]
    assert gate.adopted("manual resync", [], 0)[-1] == Tell("resynced: you have the room's items")
    assert gate.report([(0xE004, b"\x0b")], 7.2, 101.2, 4) == []


def test_a_second_adoption_keeps_the_gate_closed_until_it_ends() -> None:
    gate = armed_gate()
    gate.resync()
    gate.resync()
    assert gate.adopted("manual resync", [(0xE005, b"\x01")], 0) == []  # one message, at the end
    assert gate.adopting
    assert gate.report([(0xE006, b"\x01")], 8.0, 102.0, 2) == []
    assert Publish(((0xE005, b"\x01"),)) in gate.adopted("manual resync", [(0xE005, b"\x01")], 0)
    assert not gate.adopting


def test_room_bytes_and_unwritten_values() -> None:
    mesh = Mesh.create(1)
    state = mesh.replicas[0].state
    state.apply(0xE001, b"\x11\x12", 5, b"\x01" * 32)
    assert room_bytes(state) == [(0xE001, b"\x11\x12")]
    reads = [bytes(range(16)), b"\xa0\xa1\xa2\xa3"]
    assert unwritten_values(REGIONS, reads, [0xE000, 0xE101]) == [(0xE000, b"\x00"), (0xE101, b"\xa1")]


# ---- the property ---------------------------------------------------------------------------
# The booting peer's emulator: boot clears write 0 while the game is not in play; the game in
# play writes 1-255. So a 0 that the peer publishes from a report would be a boot clear leaking.


@dataclass
class BootingPeer:
    """A replica of the mesh with a gate and an emulator (a dict of RAM) that boots from zero."""

    replica: Replica
    gate: Gate = field(default_factory=lambda: Gate(LAYOUT, IN_GAME, None))
    ram: dict[int, int] = field(default_factory=dict)
    reports: int = 0
    emutime: float = 0.0

    def frame(self, changes: dict[int, int], now: float) -> None:
        """The game writes CHANGES; the watcher reports those that changed a byte."""
        self.emutime += 0.02
        changed = {a: v for a, v in changes.items() if self.ram.get(a, 0) != v}
        self.ram.update(changes)
        if changed:
            self.reports += 1
            runs = [(a, bytes([v])) for a, v in sorted(changed.items())]
            self.act(self.gate.report(runs, self.emutime, now, self.reports), now)

    def probe(self, now: float) -> None:
        self.act(self.gate.probed({IN_PLAY: self.ram.get(IN_PLAY, 0)}, self.emutime, self.reports), now)

    def act(self, actions: list[Action], now: float) -> None:
        for action in actions:
            match action:
                case Publish(runs, written_at):
                    if written_at is not None:  # from a report: the game in play, never a clear
                        assert all(all(data) for _, data in runs), runs
                    self.replica.local_changes(runs, now, wall=now, written_at=written_at)
                case WriteToEmulator(runs):
                    self.write(runs)
                case AdoptRoom(reason):
                    written = room_bytes(self.replica.state)
                    self.write(written)
                    reads = [bytes(self.ram.get(a, 0) for a in range(r.start, r.end + 1)) for r in REGIONS]
                    game = unwritten_values(REGIONS, reads, self.replica.unwritten_addresses())
                    self.act(self.gate.adopted(reason, game, len(written)), now)

    def write(self, runs) -> None:
        for address, data in runs:
            for offset, value in enumerate(data):
                self.ram[address + offset] = value


shared = st.sampled_from([*range(0xE000, 0xE010), *range(0xE100, 0xE104)])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(0, 1000)),
        st.tuples(st.just("write"), st.integers(0, 1), shared, st.integers(1, 255)),
        st.tuples(st.just("boot_clear"), shared),
        st.tuples(st.just("start_game")),
        st.tuples(st.just("title_screen")),
        st.tuples(st.just("probe")),
        st.tuples(st.just("play"), shared, st.integers(1, 255)),
        st.tuples(st.just("resync")),
    ),
    max_size=60,
)


@given(steps)
def test_a_booting_peer_never_publishes_its_boot_and_ends_with_the_rooms_bytes(plan) -> None:
    mesh = Mesh.create(3)
    peer = BootingPeer(mesh.replicas[2])
    peer.act(peer.gate.room_is_ready(), mesh.now)
    for step in plan:
        match step:
            case ("deliver", position) if mesh.in_flight:
                deliver(mesh, peer, position)
            case ("write", who, address, value):
                mesh.write(who, address, bytes([value]))
            case ("boot_clear", address) if peer.ram.get(IN_PLAY, 0) == 0:
                peer.frame({address: 0}, mesh.now)
            case ("start_game",):
                peer.frame({IN_PLAY: 1}, mesh.now)
            case ("title_screen",):
                peer.frame({IN_PLAY: 0}, mesh.now)
            case ("probe",):
                peer.probe(mesh.now)
            case ("play", address, value) if peer.ram.get(IN_PLAY, 0) == 1:
                peer.frame({address: value}, mesh.now)
            case ("resync",):
                peer.act(peer.gate.resync(), mesh.now)
        mesh.collect()
        mesh.now += 0.01
    # Everything arrives; the booting peer is (or gets) in play and is checked.
    peer.frame({IN_PLAY: 1}, mesh.now)
    peer.probe(mesh.now)
    mesh.collect()
    while mesh.in_flight:
        deliver(mesh, peer, 0)

    assert peer.gate.armed and not peer.gate.adopting
    room = mesh.replicas[0].state
    assert {r.state.digest() for r in mesh.replicas} == {room.digest()}
    for address in LAYOUT.addresses:
        i = LAYOUT.index(address)
        if room.writers[i] != NO_WRITER:
            assert peer.ram.get(address, 0) == room.values[i], hex(address)


def deliver(mesh: Mesh, peer: BootingPeer, position: int) -> None:
    _, target, _ = mesh.in_flight[position % len(mesh.in_flight)]
    for event in mesh.deliver(position):
        if target == 2 and isinstance(event, BytesChanged):
            peer.act(peer.gate.remote_changes(event.changes), mesh.now)
