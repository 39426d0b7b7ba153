"""The arming rule: nothing is published before the room's state, the game and the delay allow it."""

import pytest

from games.definition import ArmedClause, ArmedWhen, Comparison
from peer.core.arming import Adopt, Arming, Disarm

IN_GAME = ArmedWhen((ArmedClause(0xE000, Comparison.EQ, 1),))


def test_without_a_condition_it_arms_once_the_room_is_known():
    arming = Arming(None)
    assert arming.observe({}, 1.0) == []
    assert not arming.armed
    assert arming.room_is_ready() == [Adopt("armed")]
    assert arming.armed
    assert arming.observe({}, 2.0) == []


def test_title_screen_keeps_it_disarmed_then_play_arms_and_leaving_play_disarms():
    arming = Arming(IN_GAME)
    assert arming.room_is_ready() == []
    assert arming.waiting_for() == ["the game (e000 == 01)"]
    assert arming.observe({0xE000: 0}, 1.0) == []
    assert arming.observe({0xE000: 1}, 2.0) == [Adopt("armed")]
    assert arming.observe({0xE000: 1}, 3.0) == []
    assert arming.observe({0xE000: 0}, 4.0) == [Disarm("the game left play (armed-when no longer holds)")]
    assert not arming.armed
    assert arming.observe({0xE000: 1}, 5.0) == [Adopt("armed")]


def test_arm_after_waits_for_emulated_time():
    arming = Arming(None, arm_after=5.0)
    arming.room_is_ready()
    assert arming.observe({}, 4.9) == []
    assert arming.waiting_for() == ["0.1 emulated s"]
    assert arming.observe({}, 5.0) == [Adopt("armed")]


def test_room_state_is_needed_even_when_the_game_is_ready():
    arming = Arming(IN_GAME)
    assert arming.observe({0xE000: 1}, 1.0) == []
    assert arming.room_is_ready() == [Adopt("armed")]


def test_manual_resync_adopts_only_when_armed():
    arming = Arming(None)
    assert arming.resync() == []
    arming.room_is_ready()
    assert arming.resync() == [Adopt("manual resync")]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="arm-after"):
        Arming(None, arm_after=-1)
    with pytest.raises(ValueError, match="0xe000"):
        Arming(IN_GAME).observe({}, 0.0)
