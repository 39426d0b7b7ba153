"""What each openMSX version offers msxsync (`peer.core.emulator.openmsx_versions`), without openMSX."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.core.emulator.openmsx_versions import (
    UnsupportedOpenMSX,
    features_for,
    parse_version,
    parse_window_position,
    with_window_position,
)
from peer.emulator import window_note
from peer.options import PeerOptions


@pytest.mark.parametrize(
    ("reply", "major", "minor"),
    [
        ("openMSX 18.0", 18, 0),
        ("openMSX 20.0", 20, 0),
        ("openMSX 21.0-42-gabcdef0", 21, 0),  # a development build
        ("openMSX 19.1\nflavour: opt\ncomponents: CORE GL", 19, 1),  # `openmsx -v`
    ],
)
def test_the_version_is_read_from_what_openmsx_says(reply: str, major: int, minor: int) -> None:
    version = parse_version(reply)
    assert (version.major, version.minor) == (major, minor)


def test_a_reply_without_a_version_is_refused_saying_what_came() -> None:
    with pytest.raises(UnsupportedOpenMSX, match="cannot tell which openMSX"):
        parse_version("fMSX 4.9")


def test_the_renderers_follow_the_version() -> None:
    old, new = features_for(parse_version("openMSX 18.0")), features_for(parse_version("openMSX 21.0"))
    assert (old.renderer(headless=False), old.renderer(headless=True)) == ("SDL", "SDL")
    assert (new.renderer(headless=False), new.renderer(headless=True)) == ("SDLGL-PP", "none")
    assert features_for(parse_version("openMSX 19.1")).window_renderer == "SDL"
    assert features_for(parse_version("openMSX 22.0")).window_renderer == "SDLGL-PP"


def test_an_openmsx_older_than_18_gets_one_sentence() -> None:
    with pytest.raises(UnsupportedOpenMSX) as raised:
        features_for(parse_version("openMSX 17.0"))
    message = str(raised.value)
    assert message == "openMSX 17.0 is too old for msxsync: it needs openMSX 18.0 or newer (openmsx.org)"


def test_the_watchpoint_command_follows_the_version() -> None:
    old = features_for(parse_version("openMSX 20.0")).watchpoint("write_mem", 0xE000, 0xE00F, "incr ::n")
    new = features_for(parse_version("openMSX 21.0")).watchpoint("write_mem", 0xE000, None, "incr ::n")
    assert old == "debug set_watchpoint write_mem {57344 57359} {} {incr ::n}"
    assert new == "debug watchpoint create -type write_mem -address 57344 -command {incr ::n}"
    with pytest.raises(ValueError, match="kind"):
        features_for(parse_version("openMSX 21.0")).watchpoint("write_mem; exit", 1, None, "")


def test_the_window_position_goes_into_an_empty_or_missing_ini() -> None:
    assert with_window_position("", 700, 40) == "[openmsx][manager]\nwindowPos=[ 700 40 ]\n"


def test_the_window_position_replaces_only_its_own_line() -> None:
    ini = (
        "[Window][Debug##Default]\nPos=60,60\n\n"
        "[openmsx][manager]\nmainMenuBarFade=1\nwindowPos=[ 805240832 805240832 ]\n\n"
        "[openmsx][media]\nresetOnInsertRom=1\n"
    )
    placed = with_window_position(ini, 10, 20)
    assert placed.count("windowPos=") == 1
    assert "[openmsx][manager]\nwindowPos=[ 10 20 ]\nmainMenuBarFade=1\n" in placed
    assert "Pos=60,60" in placed and "resetOnInsertRom=1" in placed
    assert with_window_position(placed, 10, 20) == placed  # the same twice: no change


@given(
    st.text(alphabet=st.sampled_from("[]=\n ab01"), max_size=80), st.integers(0, 4000), st.integers(0, 4000)
)
def test_any_ini_ends_up_with_exactly_one_position(ini: str, x: int, y: int) -> None:
    placed = with_window_position(ini, x, y)
    assert placed.splitlines().count(f"windowPos=[ {x} {y} ]") == 1


@pytest.mark.parametrize("text", ["700", "a,b", "--1,5", "1,2,3", "99999,1", "-99999,1", "", "1.5,2"])
def test_a_bad_window_position_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_window_position(text)


def test_a_window_position_may_be_on_a_screen_left_of_the_main_one() -> None:
    assert parse_window_position("700, 40") == (700, 40)
    assert parse_window_position("-1280,40") == (-1280, 40)
    assert "windowPos=[ -1280 40 ]" in with_window_position("", -1280, 40)


def test_a_player_whose_openmsx_cannot_place_its_window_is_told() -> None:
    placed = PeerOptions(game="demo", rendezvous="", window_position=(640, 40))
    old, new = features_for(parse_version("openMSX 18.0")), features_for(parse_version("openMSX 20.0"))
    assert window_note(placed, old) == (
        "openMSX 18.0 opens its window where the desktop puts it: --window-position takes openMSX 20 or later"
    )
    assert window_note(placed, new) is None
    assert window_note(PeerOptions(game="demo", rendezvous=""), old) is None
