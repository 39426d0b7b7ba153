"""The arming rule: nothing is published before the room's state, the game and the delay allow it,
and only the running emulator (a `check`), never a report alone, can arm."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from games.definition import ArmedClause, ArmedWhen, Comparison
from peer.core.emulator.arming import Adopt, Arming, Check, Disarm

IN_GAME = ArmedWhen((ArmedClause(0xE000, Comparison.EQ, 1),))
LEFT_PLAY = Disarm("the game is not in play")


def test_without_a_condition_it_arms_once_the_room_is_known_and_the_emulator_confirms():
    arming = Arming(None)
    assert arming.observe({}, 1.0, report=1) == []  # the room is not known yet
    assert not arming.armed
    arming = Arming(None)
    assert arming.room_is_ready() == [Check()]
    assert not arming.armed
    assert arming.check({}, 1.5, last_report=3) == [Adopt("armed")]
    assert arming.armed
    assert arming.observe({}, 2.0, report=4) == []


def test_title_screen_keeps_it_disarmed_then_play_arms_and_leaving_play_disarms():
    arming = Arming(IN_GAME)
    assert arming.room_is_ready() == []
    assert arming.waiting_for() == ["the game to start"]
    assert arming.observe({0xE000: 0}, 1.0, report=1) == []
    assert arming.observe({0xE000: 1}, 2.0, report=2) == [Check()]
    assert arming.check({0xE000: 1}, 2.1, last_report=2) == [Adopt("armed")]
    assert arming.observe({0xE000: 1}, 3.0, report=3) == []
    assert arming.observe({0xE000: 0}, 4.0, report=4) == [LEFT_PLAY]
    assert not arming.armed
    assert arming.observe({0xE000: 1}, 5.0, report=5) == [Check()]
    assert arming.check({0xE000: 1}, 5.0, last_report=5) == [Adopt("armed")]


def test_a_report_cannot_arm_when_the_emulator_disagrees():
    """A leftover report (openMSX saved it in an earlier run) says "in play at 40 s"; the emulator,
    just started, says otherwise: no arming."""
    arming = Arming(IN_GAME, arm_after=6.0)
    arming.room_is_ready()
    assert arming.observe({0xE000: 1}, 40.0, report=9) == [Check()]
    assert arming.check({0xE000: 0}, 0.1, last_report=0) == []
    assert arming.waiting_for() == ["the game to start", "the game to boot (6 s)"]
    assert arming.check({0xE000: 1}, 0.2, last_report=1) == []
    assert not arming.armed


def test_arm_after_waits_for_emulated_time_read_from_the_emulator():
    arming = Arming(None, arm_after=5.0)
    arming.room_is_ready()
    assert arming.check({}, 4.9, last_report=10) == []
    assert arming.waiting_for() == ["the game to boot (1 s)"]
    assert arming.observe({}, 5.0, report=11) == [Check()]  # a report alone does not arm
    assert not arming.armed
    assert arming.check({}, 5.0, last_report=11) == [Adopt("armed")]


def test_only_reports_made_after_the_arming_check_are_published():
    arming = Arming(IN_GAME)
    arming.room_is_ready()
    assert not arming.publishes(1)
    arming.check({0xE000: 1}, 7.0, last_report=20)
    assert [arming.publishes(n) for n in (19, 20, 21)] == [False, False, True]
    # A report made before the check (the title screen, still on its way) is old news: it
    # neither disarms nor is published.
    assert arming.observe({0xE000: 0}, 6.9, report=20) == []
    assert arming.armed
    assert arming.observe({0xE000: 0}, 7.2, report=21) == [LEFT_PLAY]
    assert not arming.publishes(22)


def test_room_state_is_needed_even_when_the_game_is_ready():
    arming = Arming(IN_GAME)
    assert arming.check({0xE000: 1}, 1.0, last_report=0) == []
    assert arming.room_is_ready() == [Check()]
    assert arming.check({0xE000: 1}, 1.1, last_report=0) == [Adopt("armed")]


def test_manual_resync_adopts_only_when_armed():
    arming = Arming(None)
    assert arming.resync() == []
    arming.room_is_ready()
    arming.check({}, 0.0, last_report=0)
    assert arming.resync() == [Adopt("manual resync")]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="arm-after"):
        Arming(None, arm_after=-1)
    with pytest.raises(ValueError, match="0xe000"):
        Arming(IN_GAME).observe({}, 0.0, report=1)
    with pytest.raises(ValueError, match="emulated time"):
        Arming(None).check({}, float("nan"), last_report=0)


observations = st.lists(
    st.tuples(st.sampled_from(["observe", "check", "room"]), st.booleans(), st.floats(0, 20)), max_size=30
)


@given(observations)
def test_only_a_check_of_the_running_emulator_arms(steps: list[tuple[str, bool, float]]) -> None:
    """Whatever reports say and in whatever order, arming happens in `check` and only when the
    emulator itself says the game is in play and --arm-after has passed."""
    arming = Arming(IN_GAME, arm_after=6.0)
    for report, (kind, in_play, emutime) in enumerate(steps, start=1):
        was_armed = arming.armed
        memory = {0xE000: int(in_play)}
        if kind == "observe":
            actions = arming.observe(memory, emutime, report)
        elif kind == "check":
            actions = arming.check(memory, emutime, report)
        else:
            actions = arming.room_is_ready()
        if arming.armed and not was_armed:
            assert kind == "check" and in_play and emutime >= 6.0 and arming.room_ready
            assert actions == [Adopt("armed")]
        assert (Adopt("armed") in actions) == (arming.armed and not was_armed)
