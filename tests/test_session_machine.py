"""The session as a pure machine (peer.core.room.session): phases, the one timer, and where each
answer goes. No asyncio, no clock: time is passed in."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from games.definition import ArmedClause, ArmedWhen, Comparison
from games.named import NamedItem
from peer.console import HELP, Command
from peer.core.emulator.gating import AdoptRoom, Gate, Publish, WriteToEmulator
from peer.core.mesh.events import LinkStatistics, PeerAdmitted, Published
from peer.core.room.items import ItemNews
from peer.core.room.room_game import GameGuard, Platform
from peer.core.room.session import (
    ARMING_POLL,
    CLOCK_CHECK,
    ROOM_STATE_TIMEOUT,
    Effect,
    ListPeers,
    Log,
    Phase,
    Print,
    ProbeEmulator,
    ReadClocks,
    RequestResync,
    SaveSoon,
    SendChat,
    SessionError,
    SessionMachine,
    Show,
    Stop,
)
from peer.core.room.signalling import Member, Roster
from peer.core.room.view import RoomView
from peer.core.sync.replica import BytesChanged, FullStateReceived, PeerStatistics, StateChanged
from peer.core.sync.state import Layout, SharedState
from rendezvous.names import fingerprint
from tests.sim import REGIONS, Mesh

ME, ALICE, BOB = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
URL = "ws://rendezvous.example:8765/ws"
IN_PLAY = 0xE200  # watched for arming, never shared
IN_GAME = ArmedWhen((ArmedClause(IN_PLAY, Comparison.EQ, 1),))
KEY_ITEM = 0xE001
MY_ROM, OTHER_ROM = Platform(b"\x11" * 20), Platform(b"\x22" * 20)
T0 = 1000.0


def machine(*, armed_when: ArmedWhen | None = IN_GAME, quit_after: float | None = None) -> SessionMachine:
    return SessionMachine(
        gate=Gate(Layout(REGIONS), armed_when, None),
        news=ItemNews([NamedItem(KEY_ITEM, "key")], []),
        guard=GameGuard(MY_ROM, "Demo", ME),
        view=RoomView(ME, "me"),
        url=URL,
        quit_after=quit_after,
    )


def phase(session: SessionMachine) -> Phase:
    """(A function, so that the type checker does not hold a phase seen earlier for the current one.)"""
    return session.phase


def roster(*keys: bytes, host: bytes = ALICE) -> Roster:
    names = {ME: "me", ALICE: "alice", BOB: "bob"}
    return Roster("friday", host, tuple(Member(key, names[key], True) for key in keys))


def state() -> SharedState:
    return SharedState(Layout(REGIONS))


def joined(session: SessionMachine, *keys: bytes, room_state: SharedState | None = None) -> list[Effect]:
    """Through starting and joining, at T0 (the first probe answered with the game not in play)."""
    assert session.emulator_ready(T0 - 1) == [ProbeEmulator()]
    session.probed({IN_PLAY: 0}, 1.0, 0, T0 - 1)
    return session.joined(room_state or state(), roster(*keys) if keys else None, T0)


def playing(session: SessionMachine) -> None:
    """Alone in the room with the game in play: armed and sharing."""
    joined(session, ME)
    effects = session.report([(IN_PLAY, b"\x01")], 6.0, 100.0, 1)
    assert effects == [ProbeEmulator()]
    assert session.probed({IN_PLAY: 1}, 6.1, 1, T0 + 1) == [AdoptRoom("armed")]
    session.gate_actions(session.gate.adopted("armed", [], 0))
    assert session.gate.armed


def texts(effects: list[Effect]) -> list[str]:
    return [effect.text for effect in effects if isinstance(effect, Print)]


def logs(effects: list[Effect]) -> list[str]:
    return [effect.text for effect in effects if isinstance(effect, Log)]


# ---- phases --------------------------------------------------------------------------------------


def test_the_phases_follow_the_session_and_wrong_order_is_a_bug() -> None:
    session = machine()
    assert phase(session) is Phase.STARTING and session.get_timer() is None
    with pytest.raises(SessionError):
        session.joined(state(), None, T0)  # joined before openMSX runs
    session.emulator_ready(T0)
    assert phase(session) is Phase.JOINING and session.get_timer() is None  # no timer before the room
    session.joined(state(), roster(ME, ALICE), T0)
    assert phase(session) is Phase.WAITING
    assert session.stop("interrupted") == [Stop("interrupted")]
    assert phase(session) is Phase.LEAVING and session.get_timer() is None
    assert session.stop("openMSX went away: killed") == [Stop("openMSX went away: killed")]
    assert session.stop_reason == "openMSX went away: killed"  # the last reason given wins


def test_stopped_while_the_join_finished_stays_stopped() -> None:
    session = machine()
    session.emulator_ready(T0)
    session.stop("openMSX went away: gone")
    effects = session.joined(state(), roster(ME), T0)
    assert logs(effects) == [] and not session.gate.arming.room_ready  # no room to be ready for
    assert phase(session) is Phase.LEAVING and session.get_timer() is None


# ---- the room-state deadline ---------------------------------------------------------------------


def test_alone_in_the_room_the_room_is_ready_at_once() -> None:
    session = machine()
    effects = joined(session, ME)
    assert Log("alone in the room: playing with the state saved on this machine") in effects
    assert phase(session) is Phase.PLAYING and session.gate.arming.room_ready


def test_someones_full_state_makes_the_room_ready() -> None:
    session = machine()
    joined(session, ME, ALICE)
    assert phase(session) is Phase.WAITING and not session.gate.arming.room_ready
    assert session.mesh_event(FullStateReceived(ALICE, room_state=False), T0 + 1) == []  # a newcomer's
    effects = session.mesh_event(FullStateReceived(ALICE), T0 + 2)
    assert logs(effects) == ["got the room's state from alice"]
    assert phase(session) is Phase.PLAYING
    assert logs(session.handle_timer(T0 + ROOM_STATE_TIMEOUT)) == []  # the deadline is gone


def test_nobody_answering_within_ten_seconds_plays_on_with_our_own_state() -> None:
    session = machine()
    joined(session, ME, ALICE)
    assert session.get_timer() == T0 + ARMING_POLL  # the first of what is due: the arming poll
    assert session.handle_timer(T0 + ROOM_STATE_TIMEOUT - 0.01) == [ReadClocks(), ProbeEmulator()]
    session.probed({IN_PLAY: 0}, 2.0, 0, T0 + ROOM_STATE_TIMEOUT - 0.01)
    assert not session.gate.arming.room_ready
    effects = session.handle_timer(T0 + ROOM_STATE_TIMEOUT)
    assert (
        Log("no other player answered within 10 s: playing with this machine's saved state", True) in effects
    )
    assert phase(session) is Phase.PLAYING and session.gate.arming.room_ready


def test_a_room_state_that_came_while_joining_counts_once_joined() -> None:
    session = machine()
    session.emulator_ready(T0 - 1)
    session.mesh_event(FullStateReceived(ALICE), T0 - 0.5)
    session.joined(state(), roster(ME, ALICE), T0)
    assert phase(session) is Phase.PLAYING
    assert not any("no other player" in text for text in logs(session.handle_timer(T0 + ROOM_STATE_TIMEOUT)))


# ---- the timer: arming poll, clocks, quit --------------------------------------------------------


def test_while_disarmed_the_emulator_is_probed_every_poll_one_probe_at_a_time() -> None:
    session = machine()
    joined(session, ME)
    assert session.get_timer() == T0 + ARMING_POLL
    assert session.handle_timer(T0 + ARMING_POLL) == [ProbeEmulator()]
    assert session.get_timer() == T0 + CLOCK_CHECK  # no second probe while one is out
    assert session.report([(IN_PLAY, b"\x01")], 3.0, 100.0, 1) == []  # a check asked for: after it
    assert session.probe_failed("unreadable", T0 + 0.3) == [
        Log("could not check openMSX's state for arming (will try again): unreadable", True),
        ProbeEmulator(),  # the check asked meanwhile
    ]
    assert session.probed({IN_PLAY: 1}, 3.1, 1, T0 + 0.4) == [AdoptRoom("armed")]
    assert session.gate.armed
    assert session.get_timer() == T0 + CLOCK_CHECK  # armed: no more polling


def test_the_clocks_are_read_every_five_seconds_and_a_far_one_told_once() -> None:
    session = machine()
    joined(session, ME, ALICE)
    effects = session.handle_timer(T0 + CLOCK_CHECK)
    assert ReadClocks() in effects
    far = {ALICE: LinkStatistics(sync=PeerStatistics(skew=41.0))}
    told = session.clocks(far)
    assert [type(e) for e in told] == [Print, Show] and "differ by 41 s" in texts(told)[0]
    assert session.clocks(far) == []
    assert ReadClocks() in session.handle_timer(T0 + 2 * CLOCK_CHECK)


def test_quit_after_stops_the_session_once_time_is_up() -> None:
    session = machine(quit_after=30.0)
    joined(session, ME)
    assert session.handle_timer(T0 + 29.9) != [Stop("time is up")]
    assert session.handle_timer(T0 + 30.0) == [Stop("time is up")]
    assert phase(session) is Phase.LEAVING and session.get_timer() is None


@given(st.lists(st.floats(min_value=0.0, max_value=30.0), max_size=30))
def test_the_timer_is_never_in_the_past_after_handling_it(steps: list[float]) -> None:
    """Whatever the order of ticks, after `handle_timer(now)` nothing due at `now` is left."""
    session = machine(quit_after=25.0)
    joined(session, ME, ALICE)
    now = T0
    for step in steps:
        now += step
        for effect in session.handle_timer(now):
            if isinstance(effect, ProbeEmulator):
                session.probed({IN_PLAY: 0}, 1.0, 0, now)
        timer = session.get_timer()
        assert timer is None or timer > now


# ---- resync --------------------------------------------------------------------------------------


def test_a_resync_before_sharing_asks_the_room_and_says_so() -> None:
    session = machine()
    joined(session, ME, ALICE)
    words = "resync: asked the room again (your game is not sharing yet)"
    assert session.resync() == [RequestResync(), Print(words), Show(words)]


def test_a_resync_while_sharing_asks_the_room_and_readopts() -> None:
    session = machine()
    playing(session)
    assert session.command(Command("resync")) == [RequestResync(), AdoptRoom("manual resync")]


def test_a_resync_before_joining_asks_no_mesh() -> None:
    session = machine()
    session.emulator_ready(T0)
    assert RequestResync() not in session.resync()


# ---- refusal -------------------------------------------------------------------------------------


def test_the_room_refusing_our_game_stops_the_session_once() -> None:
    session = machine()
    joined(session, ME, ALICE)  # alice started the room: her game is the room's
    refused, effects = session.check_game(ALICE, OTHER_ROM, T0 + 1)
    assert refused is not None and effects == [Stop("refused: another game")]
    assert session.guard.refusal is not None and "this room plays Demo" in session.guard.refusal
    assert session.check_game(ALICE, OTHER_ROM, T0 + 2)[1] == []  # told once


def test_a_joiner_with_another_game_is_refused_without_stopping_us() -> None:
    session = machine()
    session.emulator_ready(T0)
    session.joined(state(), roster(ME, BOB, host=ME), T0)
    refused, effects = session.check_game(BOB, OTHER_ROM, T0 + 1)
    assert refused is not None and effects == []
    assert session.check_game(BOB, MY_ROM, T0 + 2) == (None, [])


# ---- the host and the server ---------------------------------------------------------------------


def test_host_moved_notices_and_hosting() -> None:
    session = machine()
    joined(session, ME, ALICE, BOB)
    assert texts(session.host_moved(BOB)) == ["bob now hosts the room"]
    assert not session.hosting
    assert texts(session.host_moved(ME)) == ["you now host the room"]
    assert session.hosting
    assert session.host_moved(ME) == []  # no news
    session.host_moved(None)  # moved to a standalone rendezvous: we stopped hosting
    assert not session.hosting


def test_server_unreachable_then_reconnected() -> None:
    session = machine()
    joined(session, ME, ALICE)
    lost = session.server_lost()
    assert lost == [
        Print("the room's server is unreachable: playing on, retrying"),
        Show("the room's server is unreachable: playing on, retrying"),
    ]
    assert session.server() == "server unreachable, retrying"
    assert session.status("Demo", ()).server == "server unreachable, retrying"
    assert texts(session.server_back()) == ["reconnected to the room's server"]
    assert session.server() != "server unreachable, retrying"


# ---- item news -----------------------------------------------------------------------------------


def test_item_news_only_while_our_game_shares() -> None:
    room = Mesh.create(2)
    alice = room.replicas[1].key
    session = machine()
    joined(session, ME, ALICE, room_state=room.replicas[0].state)
    session.mesh_event(FullStateReceived(alice), T0 + 1)
    room.write(1, KEY_ITEM, b"\x01")
    room.settle()
    before = session.mesh_event(BytesChanged(alice, ((KEY_ITEM, b"\x01"),)), T0 + 2)
    assert not any(isinstance(e, Print | Show) for e in before)  # not sharing: the room's state
    session.report([(IN_PLAY, b"\x01")], 6.0, 100.0, 1)
    session.probed({IN_PLAY: 1}, 6.1, 1, T0 + 3)
    session.gate_actions(session.gate.adopted("armed", [], 1))
    room.write(1, KEY_ITEM, b"\x00")
    room.settle()
    lost = session.mesh_event(BytesChanged(alice, ((KEY_ITEM, b"\x00"),)), T0 + 4)
    name = fingerprint(alice)  # (not in the roster: named by its key)
    assert lost == [
        SaveSoon(),
        WriteToEmulator(((KEY_ITEM, b"\x00"),)),
        Print(f"{name} lost the key"),
        Show(f"{name} lost the key"),
    ]


def test_item_news_before_joining_is_nothing() -> None:
    session = machine()
    session.emulator_ready(T0)
    effects = session.mesh_event(BytesChanged(ALICE, ((KEY_ITEM, b"\x01"),)), T0)
    assert effects == [SaveSoon()]


# ---- what goes where -----------------------------------------------------------------------------


def test_effects_go_where_they_belong() -> None:
    session = machine()
    playing(session)
    shared = [(0xE002, b"\x05")]
    assert session.report(shared, 7.0, 101.0, 2) == [Publish(((0xE002, b"\x05"),), 101.0)]  # → mesh
    remote = session.mesh_event(BytesChanged(ALICE, ((0xE003, b"\x07"),)), T0 + 5)
    assert remote == [SaveSoon(), WriteToEmulator(((0xE003, b"\x07"),))]  # → persistence, applier
    echoed = session.mesh_event(Published(((0xE002, b"\x05"),), ((0xE002, b"\x06"),)), T0 + 6)
    assert echoed == [SaveSoon(), WriteToEmulator(((0xE002, b"\x06"),))]  # the room's merge of ours
    assert session.mesh_event(StateChanged(), T0 + 7) == [SaveSoon()]
    session.roster(roster(ME, ALICE), T0 + 8)
    assert texts(session.mesh_event(PeerAdmitted(ALICE), T0 + 8)) == ["alice joined"]
    assert session.command(Command("say", "hi")) == [SendChat("hi")]
    assert session.command(Command("peers")) == [ListPeers()]
    assert session.command(Command("help")) == [Print(HELP)]
    assert session.command(Command("quit")) == [Stop("quit")]


def test_before_openmsx_runs_words_go_to_the_terminal_only() -> None:
    session = machine()
    assert session.server_lost() == [Print("the room's server is unreachable: playing on, retrying")]
    session.emulator_ready(T0)
    assert [type(e) for e in session.server_back()] == [Print, Show]


# ---- a property over random sessions -------------------------------------------------------------

STEPS = st.one_of(
    st.tuples(st.just("tick"), st.floats(0.0, 4.0)),
    st.tuples(st.just("report"), st.sampled_from([0, 1])),
    st.tuples(st.just("full state"), st.booleans()),
    st.tuples(st.just("alone"), st.booleans()),
    st.tuples(st.just("remote"), st.integers(0, 255)),
    st.tuples(st.just("resync"), st.none()),
    st.tuples(st.just("server"), st.booleans()),
    st.tuples(st.just("stop"), st.none()),
)


@given(st.lists(STEPS, max_size=40))
def test_any_session_publishes_only_while_sharing_and_leaving_has_no_timer(
    steps: list[tuple[str, Any]],
) -> None:
    """Whatever the order of what happens: nothing is published or written into openMSX while
    the gate is disarmed, at most one probe is out, and once stopped there is no timer. (The
    emulator answers a probe at once, and the applier adopts at once.)"""
    session = machine()
    joined(session, ME, ALICE)
    now, report = T0, 1

    def carry_out(effects: list[Effect]) -> None:
        probes = [effect for effect in effects if isinstance(effect, ProbeEmulator)]
        assert len(probes) <= 1
        for effect in effects:
            if isinstance(effect, Publish | WriteToEmulator):
                assert session.gate.armed
            elif isinstance(effect, AdoptRoom):
                carry_out(session.gate_actions(session.gate.adopted(effect.reason, [], 0)))
        if probes:
            memory = {IN_PLAY: session.gate.memory.get(IN_PLAY, 0)}
            carry_out(session.probed(memory, 1.0, report, now))

    for what, value in steps:
        match what:
            case "tick":
                now += value
                carry_out(session.handle_timer(now))
            case "report":
                report += 1
                carry_out(session.report([(IN_PLAY, bytes([value])), (0xE002, b"\x01")], 1.0, None, report))
            case "full state":
                carry_out(session.mesh_event(FullStateReceived(ALICE, room_state=value), now))
            case "alone":
                carry_out(session.roster(roster(ME) if value else roster(ME, ALICE), now))
            case "remote":
                carry_out(session.mesh_event(BytesChanged(ALICE, ((0xE003, bytes([value])),)), now))
            case "resync":
                carry_out(session.resync())
            case "server":
                carry_out(session.server_lost() if value else session.server_back())
            case _:
                carry_out(session.stop("quit"))
        if phase(session) is Phase.LEAVING:
            assert session.get_timer() is None
